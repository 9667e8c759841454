// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3/etcdmain)
// built inside fmtrain's module, so that the docker images can be built FROM
// scratch without a registry: etcd's own root module is not served by the Go
// module proxy, but its server module is, and etcdmain is the whole of etcd's main.
// It takes etcd's usual flags and ETCD_* environment variables.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
