package main

import (
	"fmt"
	"os"
	"strconv"
)

// ballast is memory the app holds for the life of the process (ALLOC_MB).
var ballast []byte

// allocFromEnv allocates $ALLOC_MB megabytes and writes every page of
// them, so the kernel charges them to the container's cgroup (untouched
// pages would cost nothing): the per-task memory metric's test sees at
// least that much.
func allocFromEnv() {
	mb, err := strconv.Atoi(os.Getenv("ALLOC_MB"))
	if err != nil || mb <= 0 {
		return
	}
	ballast = make([]byte, mb<<20)
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1
	}
	fmt.Printf("allocated %d MB\n", mb)
}
