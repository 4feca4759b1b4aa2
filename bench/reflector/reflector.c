/*
 * reflector: the floor for a userspace DNS-over-UDP server. One thread
 * receives up to BATCH datagrams with one recvmmsg, sets the QR bit of
 * each DNS query and sends them all back to their sources with one
 * sendmmsg: the same bytes, like nmecho. Datagrams shorter than a DNS
 * header are dropped. It serves until killed.
 *
 * usage: reflector [address [port]]   (default 127.0.0.1 5399)
 * build: cc -O2 -o reflector reflector.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32     /* datagrams per recvmmsg and per sendmmsg */
#define MAXMSG 65535 /* the largest UDP payload */
#define HEADER 12    /* a DNS header */

static char bufs[BATCH][MAXMSG];
static struct sockaddr_in peers[BATCH];
static struct iovec iovs[BATCH];
static struct mmsghdr in[BATCH], out[BATCH];

static int listen_udp(const char *addr, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "reflector: bad IPv4 address %s\n", addr);
		exit(2);
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		perror("reflector: listen");
		exit(1);
	}
	return fd;
}

/* arm resets the receive headers, which recvmmsg overwrites. */
static void arm(void)
{
	for (int i = 0; i < BATCH; i++) {
		iovs[i] = (struct iovec){.iov_base = bufs[i], .iov_len = MAXMSG};
		in[i].msg_hdr = (struct msghdr){
			.msg_name = &peers[i], .msg_namelen = sizeof peers[i],
			.msg_iov = &iovs[i], .msg_iovlen = 1,
		};
	}
}

/* reflect turns the n received datagrams into replies; returns how many. */
static int reflect(int n)
{
	int m = 0;
	for (int i = 0; i < n; i++) {
		if (in[i].msg_len < HEADER || (in[i].msg_hdr.msg_flags & MSG_TRUNC))
			continue;
		bufs[i][2] |= 0x80; /* QR: this is a response */
		iovs[i].iov_len = in[i].msg_len;
		out[m].msg_hdr = in[i].msg_hdr;
		out[m].msg_hdr.msg_control = NULL;
		out[m].msg_hdr.msg_controllen = 0;
		m++;
	}
	return m;
}

/* send_all sends the m replies, skipping one that the kernel refuses. */
static void send_all(int fd, int m)
{
	int off = 0;
	while (off < m) {
		int k = sendmmsg(fd, out + off, m - off, 0);
		if (k < 0 && errno == EINTR)
			continue;
		off += k > 0 ? k : 1; /* a reply that cannot go is dropped */
	}
}

int main(int argc, char **argv)
{
	int fd = listen_udp(argc > 1 ? argv[1] : "127.0.0.1", argc > 2 ? atoi(argv[2]) : 5399);
	for (;;) {
		arm();
		int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("reflector: recvmmsg");
			return 1;
		}
		send_all(fd, reflect(n));
	}
}
