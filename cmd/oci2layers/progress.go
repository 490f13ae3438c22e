package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/oci2layers/oci2layers/internal/convert"
)

// bars draws one live progress bar per stage and item on a terminal.
type bars struct {
	p  *mpb.Progress
	mu sync.Mutex
	by map[string]*mpb.Bar
}

// newBars returns bars drawing on w, or nil when w is not a terminal (then
// the log lines say the same, one per step).
func newBars(w io.Writer) *bars {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &bars{p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(32)), by: map[string]*mpb.Bar{}}
}

// update is a convert.ProgressFunc.
func (b *bars) update(ev convert.Event) {
	key := string(ev.Stage) + " " + ev.Item
	b.mu.Lock()
	bar, ok := b.by[key]
	if !ok {
		bar = b.p.AddBar(max(ev.Total, 1),
			mpb.PrependDecorators(
				decor.Name(fmt.Sprintf("%-6s %-10s", ev.Stage, ev.Item)),
				decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
			),
			mpb.AppendDecorators(
				decor.OnComplete(decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
					"done"),
			),
		)
		b.by[key] = bar
	}
	b.mu.Unlock()

	if ev.Done > ev.Total && ev.Total > 0 {
		bar.SetTotal(ev.Done, false)
	}
	bar.SetCurrent(ev.Done)
	if ev.Finished {
		if ev.Done == 0 {
			bar.SetCurrent(1) // nothing to read, e.g. the config overlay
		}
		bar.SetTotal(-1, true)
	}
}

// wait stops drawing once every bar is complete; bars of a failed run are
// aborted so the terminal is left clean.
func (b *bars) wait() {
	b.mu.Lock()
	for _, bar := range b.by {
		if !bar.Completed() {
			bar.Abort(false)
		}
	}
	b.mu.Unlock()
	b.p.Wait()
}
