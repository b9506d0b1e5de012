"""The media gateway: SIP and RTP at the edge, 16 kHz PCM to the speech gateway."""

import warnings

# opuslib (Opus through aiortp) compiles with a SyntaxWarning on Python 3.8+ ("is not" with a
# literal); it would print to stderr once per fresh install, breaking JSON-only logs.
warnings.filterwarnings("ignore", message='"is not" with a literal', category=SyntaxWarning)
