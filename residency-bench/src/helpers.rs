//! Small load generators the benchmark runs inside its namespaces, as hidden
//! `residency-bench helper ...` subcommands of this same binary (started with
//! `ip netns exec <ns> <this binary> helper ...`).
//!
//! - `rr-server` / `rr-client`: TCP request/response, one byte each way, one
//!   transaction in flight (netperf's TCP_RR shape; iperf3 has no such mode).
//! - `udp-send`: a few datagrams, reporting how many the kernel accepted (a packet a
//!   filter drops on egress fails `sendto` with EPERM): checks that a filter is in force.
//! - `udp-flood`: 64-byte datagrams as fast as one thread can, for the event storm,
//!   and (pinned, to an allowed address) the unconnected-`sendto()` workload: each
//!   call is judged by the sendmsg hook before its packet reaches the egress hook.
//! - `churn-client`: TCP connection churn against `rr-server`: connect, one byte each
//!   way, close, for `secs`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Helper {
    /// Echo one byte per request on every accepted connection.
    RrServer {
        #[arg(long)]
        addr: SocketAddr,
        /// Pin to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Count request/response transactions for `secs`; prints `<count> <seconds>`.
    RrClient {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
        /// Pin to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Send `count` datagrams; prints `<accepted> <refused>`.
    UdpSend {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        count: u64,
    },
    /// Send datagrams for `secs`; prints `<accepted> <refused>`.
    UdpFlood {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Pin to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Connections for `secs`, each one byte each way then closed; prints `<count>
    /// <seconds>`.
    ChurnClient {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
        /// Pin to this CPU.
        #[arg(long)]
        cpu: Option<usize>,
    },
}

pub fn run(helper: Helper) -> anyhow::Result<()> {
    match helper {
        Helper::RrServer { addr, cpu } => {
            pin(cpu)?;
            rr_server(addr)
        }
        Helper::RrClient { addr, secs, cpu } => {
            pin(cpu)?;
            rr_client(addr, secs)
        }
        Helper::ChurnClient { addr, secs, cpu } => {
            pin(cpu)?;
            churn_client(addr, secs)
        }
        Helper::UdpSend { addr, count } => {
            let (ok, refused) = udp(addr, 16, |sent| sent < count)?;
            println!("{ok} {refused}");
            Ok(())
        }
        Helper::UdpFlood {
            addr,
            secs,
            payload,
            cpu,
        } => {
            pin(cpu)?;
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let (ok, refused) = udp(addr, payload, |sent| {
                !sent.is_multiple_of(256) || Instant::now() < deadline
            })?;
            println!("{ok} {refused}");
            Ok(())
        }
    }
}

/// TCP connection churn: connect, one byte each way, close, until `secs` have
/// passed; prints the connections and the seconds.
fn churn_client(addr: SocketAddr, secs: f64) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut count = 0u64;
    let mut b = [0u8; 1];
    while Instant::now() < deadline {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .with_context(|| format!("connecting to {addr}"))?;
        conn.set_nodelay(true)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        // Closed with a reset (SO_LINGER 0): no TIME_WAIT, so the ephemeral ports
        // last however many connections a run makes.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on the stream's own descriptor with a valid linger struct.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&conn),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        conn.write_all(&b)?;
        conn.read_exact(&mut b)?;
        count += 1;
    }
    println!("{count} {}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Pins this process (and the threads it starts) to one CPU.
fn pin(cpu: Option<usize>) -> anyhow::Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
    }
    Ok(())
}

fn rr_server(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = conn.set_nodelay(true);
            let mut b = [0u8; 1];
            while conn.read_exact(&mut b).is_ok() {
                if conn.write_all(&b).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn rr_client(addr: SocketAddr, secs: f64) -> anyhow::Result<()> {
    let retry_until = Instant::now() + Duration::from_secs(5);
    let mut conn = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(c) => break c,
            Err(e) if Instant::now() > retry_until => {
                return Err(e).with_context(|| format!("connecting to {addr}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut count = 0u64;
    let mut b = [0u8; 1];
    while !count.is_multiple_of(64) || Instant::now() < deadline {
        conn.write_all(&b)?;
        conn.read_exact(&mut b)?;
        count += 1;
    }
    println!("{count} {}", started.elapsed().as_secs_f64());
    Ok(())
}

/// Sends `payload`-byte datagrams while `more(sent so far)`.
fn udp(addr: SocketAddr, payload: usize, more: impl Fn(u64) -> bool) -> anyhow::Result<(u64, u64)> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let s = UdpSocket::bind(bind)?;
    let buf = vec![0u8; payload];
    let (mut ok, mut refused) = (0u64, 0u64);
    while more(ok + refused) {
        match s.send_to(&buf, addr) {
            Ok(_) => ok += 1,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => refused += 1,
            Err(e) => return Err(e).context("sendto"),
        }
    }
    Ok((ok, refused))
}
