// cri-client: the smallest CRI (runtime.v1) client the CRI test needs, since no registry here
// ships crictl. Built in GOPATH mode against the Kubernetes source tree's vendored grpc and
// cri-api (the tree `cargo xtask sandbox install` unpacks); see satellite_tests::cni::cri_client.
//
// Usage: cri-client SOCKET run < PodSandboxConfig.json   prints {"pod_sandbox_id": ...}
//        cri-client SOCKET status|stop|remove ID          prints the response as JSON
// Exit status 1 with the error on stderr when the call fails.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) < 3 || (os.Args[2] != "run" && len(os.Args) < 4) {
		fail(fmt.Errorf("usage: cri-client SOCKET run | status|stop|remove ID"))
	}
	sock, action := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, sock, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}))
	if err != nil {
		fail(err)
	}
	c := runtime.NewRuntimeServiceClient(conn)
	var resp interface{}
	switch action {
	case "run":
		var cfg runtime.PodSandboxConfig
		if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
			fail(err)
		}
		resp, err = c.RunPodSandbox(ctx, &runtime.RunPodSandboxRequest{Config: &cfg})
	case "status":
		resp, err = c.PodSandboxStatus(ctx, &runtime.PodSandboxStatusRequest{PodSandboxId: os.Args[3], Verbose: true})
	case "stop":
		resp, err = c.StopPodSandbox(ctx, &runtime.StopPodSandboxRequest{PodSandboxId: os.Args[3]})
	case "remove":
		resp, err = c.RemovePodSandbox(ctx, &runtime.RemovePodSandboxRequest{PodSandboxId: os.Args[3]})
	default:
		err = fmt.Errorf("unknown action %q", action)
	}
	if err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(resp); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cri-client:", err)
	os.Exit(1)
}
