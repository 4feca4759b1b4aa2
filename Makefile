GO ?= go
BENCHTIME ?= 2s
FUZZTIME ?= 30s

.PHONY: all test vet run bench compare saturated idle shards soak build clean fuzz

all: vet test

vet:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

test: vet
	$(GO) test -race -shuffle=on -timeout 8m ./...
	# Without the race detector: 0-RTT on the client side, which quic-go's
	# own data race (quic-go#4303) keeps from the run above, and the batching
	# of replies, which that run only checks loosely
	$(GO) test -count=1 -run '0RTT|TestStreamRepliesBatched' ./dnsmsg

run:
	$(GO) run ./cmd/nmecho

build:
	$(GO) build -o nmecho ./cmd/nmecho

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 5 ./...
	bench/compare.sh
	$(MAKE) idle shards

# Both regimes: servers pinned with taskset, then each in a cgroup at 25% of
# one CPU beside more peers (bench/saturated.sh). COMPARE_ARGS: seconds,
# runs, transports (default 5 s, 3 runs, udp tcp dot doh).
COMPARE_ARGS ?=
compare:
	bench/compare.sh $(COMPARE_ARGS)

# The saturated regime alone (7 to 8 minutes with the defaults).
saturated:
	bench/saturated.sh $(COMPARE_ARGS)

# Memory per idle connection: nmecho, the plain-Go floor and miekg/dns;
# silent connections, then (DNS over TCP) connections answered once.
idle:
	bench/idle.sh dns-tcp 10000
	SERVER=plain bench/idle.sh dns-tcp 10000
	SERVER=ref bench/idle.sh dns-tcp 10000
	bench/idle.sh dns-tcp 10000 query
	SERVER=ref bench/idle.sh dns-tcp 10000 query
	bench/idle.sh dot 1000
	SERVER=plain bench/idle.sh dot 1000
	SERVER=ref bench/idle.sh dot 1000

# One shard against two: at saturation, then at a fixed 150k queries/s;
# then with GOMAXPROCS=2 in both runs, so that only the shards differ.
shards:
	bench/shards.sh udp
	bench/shards.sh tcp
	RATE=150000 bench/shards.sh udp
	RATE=150000 bench/shards.sh tcp
	PROCS=2 bench/shards.sh udp
	PROCS=2 bench/shards.sh tcp
	PROCS=2 RATE=150000 bench/shards.sh tcp

SOAKTIME ?= 60
soak:
	bench/soak.sh $(SOAKTIME)

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzAssembler$$' -fuzztime $(FUZZTIME) ./dnsmsg
	$(GO) test -run '^$$' -fuzz '^FuzzCheckRequest$$' -fuzztime $(FUZZTIME) ./dnsmsg
	$(GO) test -run '^$$' -fuzz '^FuzzDoHGet$$' -fuzztime $(FUZZTIME) ./dnsmsg
	$(GO) test -run '^$$' -fuzz '^FuzzMinTTL$$' -fuzztime $(FUZZTIME) ./dnsmsg
	$(GO) test -run '^$$' -fuzz '^FuzzDoHConn$$' -fuzztime $(FUZZTIME) ./dnsmsg
	$(GO) test -run '^$$' -fuzz '^FuzzDoQFrame$$' -fuzztime $(FUZZTIME) ./dnsmsg
	$(GO) test -run '^$$' -fuzz '^FuzzDoQPad$$' -fuzztime $(FUZZTIME) ./dnsmsg
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./proxyproto

clean:
	rm -f nmecho
