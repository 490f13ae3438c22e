package convert

import (
	"io"
	"sync"
)

// Stage names a step of a conversion.
type Stage string

// The stages a layer or group goes through.
const (
	StageFetch Stage = "fetch" // download a blob
	StageScan  Stage = "scan"  // read a layer into its index, checking its diffID
	StageBuild Stage = "build" // stream a group into mksquashfs and a SIF
)

// Event reports progress of one stage of one item. Done and Total count
// compressed bytes of the layers involved.
type Event struct {
	Stage Stage
	// Item names what the stage works on: "layer 3", "base", "config".
	Item     string
	Done     int64
	Total    int64
	Finished bool
}

// ProgressFunc receives events, possibly from several goroutines at once.
type ProgressFunc func(Event)

// progressEvery is how many bytes pass between two events of one stage.
const progressEvery = 256 << 10

// meter counts bytes for one stage and reports them.
type meter struct {
	report ProgressFunc
	stage  Stage
	item   string
	total  int64

	mu   sync.Mutex
	done int64
	last int64
}

func newMeter(report ProgressFunc, stage Stage, item string, total int64) *meter {
	m := &meter{report: report, stage: stage, item: item, total: total}
	m.emit(false)
	return m
}

func (m *meter) add(n int) {
	if m == nil || m.report == nil {
		return
	}
	m.mu.Lock()
	m.done += int64(n)
	due := m.done-m.last >= progressEvery
	if due {
		m.last = m.done
	}
	m.mu.Unlock()
	if due {
		m.emit(false)
	}
}

// finish reports the stage as complete.
func (m *meter) finish() {
	if m != nil {
		m.emit(true)
	}
}

func (m *meter) emit(finished bool) {
	if m.report == nil {
		return
	}
	m.mu.Lock()
	ev := Event{Stage: m.stage, Item: m.item, Done: m.done, Total: m.total, Finished: finished}
	m.mu.Unlock()
	m.report(ev)
}

// reader counts what passes through it.
func (m *meter) reader(r io.Reader) io.Reader {
	if m == nil || m.report == nil {
		return r
	}
	return &meteredReader{r: r, m: m}
}

type meteredReader struct {
	r io.Reader
	m *meter
}

func (mr *meteredReader) Read(p []byte) (int, error) {
	n, err := mr.r.Read(p)
	mr.m.add(n)
	return n, err
}
