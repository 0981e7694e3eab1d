//go:build race

package policy

// raceDetector: sync.Pool drops items at random under the race detector, so
// process-wide allocation counts include refills a normal build never makes.
const raceDetector = true
