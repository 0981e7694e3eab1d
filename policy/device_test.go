package policy

import (
	"math/rand/v2"
	"testing"
)

type fakeDevice struct{ freed *int }

func (f fakeDevice) Free() { *f.freed++ }

func (f fakeDevice) SlotPositions(layer, head int, out []int32) error {
	for i := range out {
		out[i] = int32(100*layer + 10*head + i)
	}
	return nil
}

func (f fakeDevice) Clone() (DeviceState, error) {
	if f.freed == nil {
		return nil, errf(CodeMemoryCap, "no room for the clone")
	}
	return fakeDevice{f.freed}, nil
}

// onDevice makes sequence id a device sequence with a fake state.
func onDevice(t *testing.T, e *Engine, id int, freed *int) {
	t.Helper()
	if err := e.WithDevice(id, func(d *DeviceSeq) error {
		d.SetState(fakeDevice{freed})
		d.Count(1, 0, e.P.KVHeads)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceSequenceLifecycle: a device sequence's state is freed exactly
// once by remove, reset, a load over it and FreeDevice; every call that
// reads host state is refused with UNSUPPORTED instead of reading the empty
// host tables; a sequence with host steps cannot become a device one.
func TestDeviceSequenceLifecycle(t *testing.T) {
	e := mustEngine(t, smallParams())
	p := e.P
	freed := 0
	for _, id := range []int{0, 1} {
		if err := e.AddSeq(id); err != nil {
			t.Fatal(err)
		}
	}
	onDevice(t, e, 0, &freed)
	if !e.IsDevice(0) || e.IsDevice(1) {
		t.Fatal("IsDevice")
	}
	r := rand.New(rand.NewPCG(1, 2))
	q := f32Rows(gauss(r, p.QHeads*p.HeadDim), 1, p.QHeads, p.HeadDim)
	k := f32Rows(gauss(r, p.KVHeads*p.HeadDim), 1, p.KVHeads, p.HeadDim)
	slots := make([]int32, p.KVHeads)
	refused := map[string]error{
		"place": e.Place(0, 0, q, k, []int32{5}, slots, nil),
	}
	_, refused["save"] = e.SaveSeq(0)
	held := make([]int32, p.Budget)
	if err := e.SlotPositions(0, 1, 1, held); err != nil || held[2] != 112 {
		t.Errorf("slot positions of a device sequence come from its state: %v, %v", held, err)
	}
	for what, err := range refused {
		if CodeOf(err) != CodeUnsupported {
			t.Errorf("%s on a device sequence: %v, want UNSUPPORTED", what, err)
		}
	}
	if st, err := e.SeqStats(0); err != nil || st.Steps != 1 || st.Cached != uint64(p.KVHeads) {
		t.Errorf("stats of a device sequence: %+v, %v", st, err)
	}
	// A fork clones the device state; the clone is freed with its sequence,
	// and a failed clone leaves no sequence behind.
	if err := e.ForkSeq(0, 2); err != nil || !e.IsDevice(2) {
		t.Fatalf("fork of a device sequence: %v", err)
	}
	if err := e.RemoveSeq(2); err != nil || freed != 1 {
		t.Fatalf("remove the fork: %v, freed %d", err, freed)
	}
	freed = 0
	if err := e.WithDevice(0, func(d *DeviceSeq) error { d.SetState(fakeDevice{}); return nil }); err != nil {
		t.Fatal(err)
	}
	before := e.EngineStats()
	if err := e.ForkSeq(0, 2); CodeOf(err) != CodeMemoryCap || e.exists(2) || e.EngineStats().StateBytes != before.StateBytes {
		t.Fatalf("failed clone: %v, exists %v", err, e.exists(2))
	}
	if err := e.WithDevice(0, func(d *DeviceSeq) error { d.SetState(fakeDevice{&freed}); return nil }); err != nil {
		t.Fatal(err)
	}
	// A host sequence with a step cannot move to the device.
	if err := e.Place(1, 0, q, k, []int32{0}, slots, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.WithDevice(1, func(*DeviceSeq) error { return nil }); CodeOf(err) != CodeInvalidArgument {
		t.Errorf("WithDevice on a host sequence with steps: %v", err)
	}
	blob, err := e.SaveSeq(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ResetSeq(0); err != nil || freed != 1 || e.IsDevice(0) {
		t.Fatalf("reset: %v, freed %d", err, freed)
	}
	// Reset, it is a host sequence again.
	if err := e.Place(0, 0, q, k, []int32{0}, slots, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.ResetSeq(0); err != nil {
		t.Fatal(err)
	}
	onDevice(t, e, 0, &freed)
	if err := e.LoadSeq(0, blob); err != nil || freed != 2 || e.IsDevice(0) {
		t.Fatalf("load over a device sequence: %v, freed %d", err, freed)
	}
	if err := e.ResetSeq(0); err != nil {
		t.Fatal(err)
	}
	onDevice(t, e, 0, &freed)
	if err := e.RemoveSeq(0); err != nil || freed != 3 {
		t.Fatalf("remove: %v, freed %d", err, freed)
	}
	if err := e.AddSeq(0); err != nil {
		t.Fatal(err)
	}
	onDevice(t, e, 0, &freed)
	e.FreeDevice()
	e.FreeDevice()
	if freed != 4 {
		t.Fatalf("FreeDevice: freed %d", freed)
	}
}
