package convert

// DefaultMaxOverlays bounds the overlay files of one image, the config
// overlay included. Apptainer passes read-only overlays to the kernel in one
// mount option string of at most a page, which fails (or, as root, can
// silently drop the base) somewhere past 50 to 80 overlays; 24 stays far
// below and keeps start-up fast.
const DefaultMaxOverlays = 24

// layerInfo is what grouping needs to know about a layer.
type layerInfo struct {
	size  int64 // uncompressed bytes of regular files
	empty bool  // no entries at all (ENV, LABEL and similar steps)
}

// partition splits the layers above the base into overlay groups of adjacent
// layers, bottom to top. Each group becomes one overlay file.
//
//   - An empty layer never costs an overlay: it joins the group below it (or,
//     right above the base, the group above it). If nothing else is above
//     the base, empty layers join the base and partition returns none.
//   - While there are more than maxGroups groups, the adjacent pair with the
//     fewest bytes is merged, nearer the top on a tie. The top group is never
//     merged while another pair is left: it is the layer that changes most
//     often, and a change must stay cheap. Bottom layers, the ones base
//     images share, are larger and so stay separate longest.
//
// It returns the overlay groups and the base's layers (0..base-1, plus any
// empty layers that had nowhere else to go).
func partition(layers []layerInfo, base, maxGroups int) (baseGroup []int, groups [][]int) {
	for i := range base {
		baseGroup = append(baseGroup, i)
	}

	var pending []int
	for i := base; i < len(layers); i++ {
		switch {
		case !layers[i].empty:
			groups = append(groups, append(pending, i))
			pending = nil
		case len(groups) > 0:
			groups[len(groups)-1] = append(groups[len(groups)-1], i)
		default:
			pending = append(pending, i)
		}
	}
	if len(pending) > 0 {
		baseGroup = append(baseGroup, pending...)
	}

	size := func(g []int) int64 {
		var n int64
		for _, i := range g {
			n += layers[i].size
		}
		return n
	}
	for maxGroups >= 1 && len(groups) > maxGroups {
		best, bestSize := -1, int64(0)
		for k := 0; k+2 < len(groups); k++ { // pairs that leave the top alone
			s := size(groups[k]) + size(groups[k+1])
			if best < 0 || s <= bestSize {
				best, bestSize = k, s
			}
		}
		if best < 0 {
			best = len(groups) - 2
		}
		merged := append(append([]int(nil), groups[best]...), groups[best+1]...)
		groups = append(groups[:best], append([][]int{merged}, groups[best+2:]...)...)
	}
	return baseGroup, groups
}
