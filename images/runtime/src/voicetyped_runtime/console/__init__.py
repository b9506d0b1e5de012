"""The live call console: a read-only web page on the runtime's HTTP port (docs/console.md)."""
