package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

// linesFromEnv starts printing numbered lines when $LINES_RATE is set
// (log tests): "line 000001 task=<id>" on stdout, every tenth line on
// stderr instead. LINES_RATE is lines per second, 0 as fast as the pipe
// takes them; LINES_COUNT stops after that many (0: never). The app serves
// as usual meanwhile.
func linesFromEnv() {
	rate, err := strconv.Atoi(os.Getenv("LINES_RATE"))
	if err != nil || rate < 0 {
		return
	}
	count, _ := strconv.Atoi(os.Getenv("LINES_COUNT"))
	task := os.Getenv("WARREN_TASK_ID")
	go printLines(rate, count, task)
}

func printLines(rate, count int, task string) {
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	for n := 1; count == 0 || n <= count; n++ {
		if tick != nil {
			<-tick
		}
		if n%10 == 0 {
			out.Flush()
			fmt.Fprintf(os.Stderr, "line %06d task=%s stderr\n", n, task)
			continue
		}
		fmt.Fprintf(out, "line %06d task=%s\n", n, task)
		if tick != nil {
			out.Flush()
		}
	}
	out.Flush()
}
