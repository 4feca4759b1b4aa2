//go:build !unix

package transport

type rawReader struct{}

func (rr *rawReader) init(r *StreamReader) error { return nil }

func (rr *rawReader) read(r *StreamReader) (*[]byte, int, error) {
	b := r.get()
	n, err := r.conn.Read(*b)
	if n > 0 {
		return b, n, nil
	}
	r.put(b)
	return nil, 0, err
}
