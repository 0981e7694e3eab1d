package simd

// bitCountFast returns what bitCountDistGeneric returns with one table
// lookup per byte of code instead of one test per bit: tab[b][v] is the sum,
// over the set bits k of the byte value v, of the weight total - 2*ones[8b+k]
// (bits at or above len(ones) weigh 0). The sums wrap in uint32 exactly as
// the reference's do. Building the tables costs 256 additions per byte of
// code, so small tables go to the reference.
func bitCountFast(dist []uint32, table []uint64, words int, ones []uint32, total uint32) {
	nbits := len(ones)
	n := len(dist)
	if n < 64 || words < 1 || nbits == 0 || nbits > 64*words || len(table) < n*words {
		bitCountDistGeneric(dist, table, words, ones, total)
		return
	}
	nbytes := (nbits + 7) / 8
	var small [8][256]uint32
	var tab [][256]uint32
	if nbytes <= len(small) {
		tab = small[:nbytes]
	} else {
		tab = make([][256]uint32, nbytes)
	}
	var base uint32
	for _, o := range ones {
		base += o
	}
	for b := range tab {
		var w [8]uint32
		for k := range w {
			if j := 8*b + k; j < nbits {
				w[k] = total - 2*ones[j]
			}
		}
		t := &tab[b]
		for v := 1; v < 256; v++ {
			low := v & -v
			k := 0
			for low>>k != 1 {
				k++
			}
			t[v] = t[v&(v-1)] + w[k]
		}
	}
	switch {
	case words == 1 && nbytes <= 2:
		t0, t1 := &tab[0], &small[1]
		if nbytes == 2 {
			t1 = &tab[1]
		}
		table = table[:n]
		for i, c := range table {
			dist[i] = base + t0[uint8(c)] + t1[uint8(c>>8)]
		}
	case words == 1 && nbytes <= 4:
		for len(tab) < 4 {
			tab = append(tab, [256]uint32{})
		}
		t0, t1, t2, t3 := &tab[0], &tab[1], &tab[2], &tab[3]
		table = table[:n]
		for i, c := range table {
			dist[i] = base + t0[uint8(c)] + t1[uint8(c>>8)] + t2[uint8(c>>16)] + t3[uint8(c>>24)]
		}
	default:
		for i := range dist {
			c := table[i*words : (i+1)*words]
			d := base
			for b := range tab {
				d += tab[b][uint8(c[b>>3]>>(8*(uint(b)&7)))]
			}
			dist[i] = d
		}
	}
}
