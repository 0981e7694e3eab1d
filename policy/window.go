package policy

// Per-layer attention windows (token mode).
//
// A sliding-window layer (Gemma 3: 15 of 18 layers attend only to the last
// 512 positions) never attends again to a position that fell out of its
// window, so its distances say nothing about whether the position is
// needed. With windows set, a position's score counts only the (layer, KV
// head) pairs whose layer can still see it, p > t − window with t the
// newest observed position, and is their mean: a sum would rank positions
// seen by few layers (the old ones) as the closest, and evict the recent
// ones the sliding layers need. A position no layer sees any more scores
// +Inf (evicted first). With no window set, the score is the plain sum of
// every pair, as before, so decisions do not change.

import "math"

// SetLayerWindow sets layer's attention window: it attends to the
// positions p > t − window of a query at t; 0 means every position (the
// default). See hashevict_set_layer_window.
func (e *Engine) SetLayerWindow(layer, window int) error {
	if err := e.checkMode(ModeToken, "hashevict_set_layer_window"); err != nil {
		return err
	}
	if err := e.checkLayer(layer); err != nil {
		return err
	}
	if window < 0 || window > math.MaxInt32 {
		return errf(CodeInvalidArgument, "window %d of layer %d is outside [0, 2^31): 0 means every position", window, layer)
	}
	for {
		old := e.windows.Load()
		w := make([]int32, e.P.Layers)
		if old != nil {
			copy(w, *old)
		}
		w[layer] = int32(window)
		next := &w
		if !anyWindow(w) {
			next = nil // all unlimited: exactly the engine without windows
		}
		if e.windows.CompareAndSwap(old, next) {
			return nil
		}
	}
}

// LayerWindow returns layer's attention window (0: every position).
func (e *Engine) LayerWindow(layer int) (int, error) {
	if err := e.checkLayer(layer); err != nil {
		return 0, err
	}
	if w := e.windows.Load(); w != nil {
		return int((*w)[layer]), nil
	}
	return 0, nil
}

func anyWindow(w []int32) bool {
	for _, x := range w {
		if x > 0 {
			return true
		}
	}
	return false
}

// sees reports whether a layer with window w can still attend to position
// q when t is the newest position.
func sees(w int32, q, t int32) bool {
	return w == 0 || int64(q) > int64(t)-int64(w)
}

// meanScores turns the totals of the candidates c into the means over the
// (layer, KV head) pairs that see each of them (+Inf when none does).
func (e *Engine) meanScores(w []int32, pos []int32, t int32, c []int, total []float64) {
	for _, slot := range c {
		q := pos[slot]
		n := 0
		for _, x := range w {
			if sees(x, q, t) {
				n++
			}
		}
		if n == 0 {
			total[slot] = math.Inf(1)
			continue
		}
		total[slot] /= float64(n * e.P.KVHeads)
	}
}
