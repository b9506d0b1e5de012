// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3.
//
// A module of its own so that etcd is built with the dependency versions its release
// pins and kube-apiserver (../k8s) with the ones Kubernetes pins. etcd's own main
// package sits at its module root, where `go build` would name the binary "v3" and
// `go install pkg@version` refuses its relative replace directives; this wrapper
// gives it its usual name.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
