// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the
// version pinned in ../../go.mod, for kwire's local test control plane.
//
// It lives in its own Go module (../../go.mod) rather than next to
// k8s.io/kubernetes: in one module, minimal version selection would build
// etcd with Kubernetes' newer etcd/grpc/otel dependency versions instead of
// the ones this etcd release pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
