//! The yardstick for (c): a bare client that still measures what stampede
//! measures, so every figure of (c) comes with what this machine allows in
//! the same minutes.
//!
//! One thread, one epoll, one timerfd, no runtime: 100 WebSocket
//! connections, each sending a 64 B text frame with a fresh random mask on
//! the same staggered schedule as a worker, never early and woken by the
//! same rule (deadlines closer than 50 us served together), one `write` per
//! frame, every echo timed from its intended send time into an HDR
//! histogram. What it leaves out is what a tool needs and a floor does not:
//! sessions, reconnects, accounting, limits, a runtime. Its CPU is its
//! thread's own clock, which includes the kernel's work in its system calls
//! (TCP on loopback delivers to the server inside the sender's `write`), as
//! a worker's does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

use crate::figures::Shape;
use crate::wake::thread_cpu;

/// Connections, as in the (c) shape.
const CONNECTIONS: usize = 100;
const PAYLOAD: usize = 64;
/// Deadlines closer than this are served by one wake (the worker's rule).
const COALESCE: Duration = Duration::from_micros(50);
/// Sent before the measured window, as a worker's ramp is.
const WARMUP: Duration = Duration::from_secs(2);

/// Runs the (c) shape at `rate` msg/s against the echo server at `url`
/// (`ws://127.0.0.1:<port>/<path>`: loopback only) for `seconds` measured
/// seconds.
pub fn measure(url: &str, rate: u64, seconds: u64) -> Result<Shape> {
    let (port, path) = url
        .strip_prefix("ws://127.0.0.1:")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(port, path)| Some((port.parse::<u16>().ok()?, format!("/{path}"))))
        .with_context(|| format!("yardstick: {url} is not ws://127.0.0.1:<port>/<path>"))?;
    std::thread::spawn(move || run(port, &path, rate, Duration::from_secs(seconds)))
        .join()
        .map_err(|_| anyhow::anyhow!("the yardstick's thread panicked"))?
}

/// One connection: its socket, unparsed bytes and the intended send times
/// of the messages not yet echoed (a server echoes in order).
struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    waiting: VecDeque<Instant>,
}

fn run(port: u16, path: &str, rate: u64, window: Duration) -> Result<Shape> {
    if rate == 0 {
        bail!("yardstick: a rate of 0 msg/s");
    }
    let interval = Duration::from_secs_f64(CONNECTIONS as f64 / rate as f64);
    let mut conns = (0..CONNECTIONS).map(|_| open(port, path)).collect::<Result<Vec<_>>>()?;
    let epoll = epoll()?;
    let timer = timerfd()?;
    add(&epoll, timer.as_raw_fd(), u64::MAX)?;
    for (i, c) in conns.iter().enumerate() {
        c.stream.set_nonblocking(true)?;
        add(&epoll, c.stream.as_raw_fd(), i as u64)?;
    }
    // Connection i sends at start + offset(i) + k * interval: the same
    // golden-ratio stagger as a worker's slots, so each cycle visits the
    // connections in the order of their offsets.
    let offsets: Vec<(Duration, usize)> = {
        let mut o: Vec<_> = (0..CONNECTIONS)
            .map(|i| (interval.mul_f64((i as f64 * 0.618_033_988_749_895).fract()), i))
            .collect();
        o.sort();
        o
    };
    let start = Instant::now() + Duration::from_millis(10);
    let (measure_from, end) = (start + WARMUP, start + WARMUP + window);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut rng = Xorshift::seeded();
    let mut frame = [0u8; 2 + 4 + PAYLOAD];
    let (mut cycle, mut next) = (0u32, 0usize);
    let due = |cycle: u32, next: usize| start + interval * cycle + offsets[next].0;
    let (mut sent, mut echoed) = (0u64, 0u64);
    let mut cpu_at_start = None;
    let mut armed = None;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 128];
    let mut chunk = [0u8; 4096];
    loop {
        let now = Instant::now();
        if cpu_at_start.is_none() && now >= measure_from {
            cpu_at_start = Some(thread_cpu());
        }
        while due(cycle, next) <= now && due(cycle, next) < end {
            let intended = due(cycle, next);
            let conn = &mut conns[offsets[next].1];
            fill_frame(&mut frame, &mut rng);
            match conn.stream.write(&frame) {
                Ok(n) if n == frame.len() => {}
                Ok(n) => bail!("yardstick: the server took {n} of a {}-byte frame", frame.len()),
                Err(e) => return Err(e).context("yardstick: writing a frame"),
            }
            conn.waiting.push_back(intended);
            sent += 1;
            next += 1;
            if next == CONNECTIONS {
                (cycle, next) = (cycle + 1, 0);
            }
        }
        if now >= end && conns.iter().all(|c| c.waiting.is_empty()) {
            break;
        }
        if now >= end + Duration::from_secs(2) {
            bail!("yardstick: {} echoes missing 2 s after the last send", sent - echoed);
        }
        // Armed only when the wake it needs moves: an echo's wake leaves it.
        let wake = if due(cycle, next) < end { due(cycle, next) } else { end + Duration::from_millis(10) };
        if armed != Some(wake) {
            arm(&timer, wake.max(now + COALESCE) - now);
            armed = Some(wake);
        }
        // SAFETY: `events` has room for its length in entries.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("yardstick: epoll_wait");
        }
        let now = Instant::now();
        for ev in &events[..n as usize] {
            if ev.u64 == u64::MAX {
                armed = None; // it fired: a timerfd is not periodic
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a buffer of 8.
                unsafe { libc::read(timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                continue;
            }
            let conn = &mut conns[ev.u64 as usize];
            loop {
                match conn.stream.read(&mut chunk) {
                    Ok(0) => bail!("yardstick: the server closed a connection"),
                    Ok(n) => {
                        conn.rbuf.extend_from_slice(&chunk[..n]);
                        while let Some(len) = echo_len(&conn.rbuf)? {
                            conn.rbuf.drain(..len);
                            let intended =
                                conn.waiting.pop_front().context("yardstick: an echo never sent")?;
                            echoed += 1;
                            if intended >= measure_from {
                                let us = now.saturating_duration_since(intended).as_micros() as u64;
                                latency.saturating_record(us.max(1));
                            }
                        }
                        if n < chunk.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e).context("yardstick: reading"),
                }
            }
        }
    }
    let cpu = thread_cpu() - cpu_at_start.context("yardstick: the window never began")?;
    let per_s = latency.len() as f64 / window.as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(Shape {
        cpu_per_10k: cpu.as_secs_f64() / window.as_secs_f64() * 100.0 / (per_s / 10_000.0),
        p50: ms(0.5),
        p99: ms(0.99),
        p999: ms(0.999),
    })
}

/// A 64 B masked text frame with a fresh mask (RFC 6455 5.3).
fn fill_frame(frame: &mut [u8; 2 + 4 + PAYLOAD], rng: &mut Xorshift) {
    frame[0] = 0x81;
    frame[1] = 0x80 | PAYLOAD as u8;
    let mask = rng.next().to_le_bytes();
    frame[2..6].copy_from_slice(&mask[..4]);
    for (i, b) in frame[6..].iter_mut().enumerate() {
        *b = b'x' ^ mask[i % 4];
    }
}

/// The length of the whole unmasked text frame at the start of `buf`;
/// `None`: not all of it has arrived.
fn echo_len(buf: &[u8]) -> Result<Option<usize>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 != 0x81 || b1 & 0x80 != 0 {
        bail!("yardstick: the server sent a frame other than an unmasked final text frame ({b0:#x} {b1:#x})");
    }
    let (len, header) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as usize, 4),
            None => return Ok(None),
        },
        127 => bail!("yardstick: an echo over 64 KiB"),
        n => (n as usize, 2),
    };
    Ok((buf.len() >= header + len).then_some(header + len))
}

/// Opens one WebSocket connection (blocking handshake).
fn open(port: u16, path: &str) -> Result<Conn> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).context("yardstick: connecting")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let key = format!("{:022x}==", Xorshift::seeded().next() as u128 * 0x1_0000);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing past the answer is read here.
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > 4096 || stream.read(&mut byte)? == 0 {
            bail!("yardstick: no complete handshake answer");
        }
        answer.push(byte[0]);
    }
    if !answer.starts_with(b"HTTP/1.1 101") {
        bail!(
            "yardstick: the server answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
    }
    Ok(Conn { stream, rbuf: Vec::new(), waiting: VecDeque::new() })
}

fn epoll() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a result >= 0 is a new descriptor we own.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(unsafe { OwnedFd::from_raw_fd(fd) }) }
}

fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; a result >= 0 is a new descriptor we own.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(unsafe { OwnedFd::from_raw_fd(fd) }) }
}

fn add(epoll: &OwnedFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
    // SAFETY: both descriptors are open; `ev` is a valid event.
    let rc = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Arms the timerfd to fire once, `wait` from now.
fn arm(timer: &OwnedFd, wait: Duration) {
    let wait = wait.max(Duration::from_nanos(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as _,
        },
    };
    // SAFETY: `spec` is valid; the old value is not asked for.
    unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
}

/// Masks need to be unpredictable to intermediaries, not secret: a fast
/// generator seeded from the OS, as a worker's is.
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Xorshift {
        let mut seed = [0u8; 8];
        // SAFETY: getrandom fills at most 8 bytes of an 8-byte buffer.
        unsafe { libc::getrandom(seed.as_mut_ptr().cast(), 8, 0) };
        Xorshift(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_len_waits_for_the_whole_frame_and_refuses_others() {
        assert_eq!(echo_len(&[0x81]).unwrap(), None);
        assert_eq!(echo_len(&[0x81, 3, b'a', b'b']).unwrap(), None);
        assert_eq!(echo_len(&[0x81, 3, b'a', b'b', b'c', 0x81]).unwrap(), Some(5));
        assert_eq!(echo_len(&[0x81, 126, 0, 200]).unwrap(), None);
        assert!(echo_len(&[0x88, 0]).is_err(), "a close frame is not an echo");
        assert!(echo_len(&[0x81, 0x83, 0, 0, 0, 0]).is_err(), "a masked frame from a server");
    }

    #[test]
    fn each_frame_gets_a_fresh_mask_and_unmasks_to_the_payload() {
        let (mut rng, mut a, mut b) = (Xorshift::seeded(), [0u8; 70], [0u8; 70]);
        fill_frame(&mut a, &mut rng);
        fill_frame(&mut b, &mut rng);
        assert_ne!(a[2..6], b[2..6]);
        for f in [a, b] {
            assert_eq!(f[..2], [0x81, 0x80 | 64]);
            assert!(f[6..].iter().enumerate().all(|(i, x)| x ^ f[2 + i % 4] == b'x'));
        }
    }

    /// The yardstick against a real echo server (the bundled relay, in this
    /// process): every message echoed and timed.
    #[test]
    fn the_yardstick_times_every_echo_from_a_real_server() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let relay = rt.block_on(stampede_relay::Relay::start(Default::default(), shutdown.clone())).unwrap();
        let shape = measure(&relay.ws_url(), 1_000, 1).unwrap();
        shutdown.cancel();
        assert!(shape.p50 > 0.0 && shape.p50 <= shape.p99 && shape.p99 <= shape.p999, "{:?}", shape);
        assert!(shape.cpu_per_10k > 0.0);
    }
}
