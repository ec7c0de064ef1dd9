// Command packdemo builds the test app image tarball for manual use and for
// e2e scripts:
//
//	go run ./e2e/testimage/cmd/packdemo -o build/demo-v1.tar -name demo -tag v1 -version v1
//	warren image import build/demo-v1.tar
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/warrenorch/warren/e2e/testimage"
)

func main() {
	out := flag.String("o", "build/demo-v1.tar", "output tarball (OCI image layout)")
	name := flag.String("name", "demo", "image name (docker.io/library/ is added for bare names)")
	tag := flag.String("tag", "v1", "image tag")
	version := flag.String("version", "v1", "version the app reports when $VERSION is unset")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := testimage.Build(ctx, *out, *name, *tag, *version); err != nil {
		fmt.Fprintf(os.Stderr, "packdemo: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%s)\n", *out, testimage.FullName(*name, *tag))
}
