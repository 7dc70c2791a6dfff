//! Which targets this worker agrees to load. A worker takes its target from
//! whichever controller commands it, so without a limit a stolen or
//! mistaken controller could aim the fleet at anything. The operator of the
//! worker's host decides: `--allow-target` entries (a host name, an IP, either
//! with `:PORT`, or a CIDR block); without any, loopback only (the safe
//! default: a worker started by hand only loads what runs beside it).

use std::net::IpAddr;

use crate::target::Target;

/// One allowed target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host name (as the URL writes it), any port or one.
    Host(String, Option<u16>),
    /// An address, any port or one.
    Ip(IpAddr, Option<u16>),
    /// A block of addresses.
    Cidr(IpAddr, u8),
}

/// The targets a worker agrees to load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist(Vec<Entry>);

impl Allowlist {
    /// Parses `--allow-target` values; the error names the bad one.
    pub fn parse(values: &[String]) -> Result<Allowlist, String> {
        values.iter().map(|v| parse_entry(v.trim())).collect::<Result<Vec<_>, _>>().map(Allowlist)
    }

    /// Reads an allowlist file: one entry per line as `--allow-target`
    /// takes it, `#` starts a comment; the error names the file and line.
    pub fn read_file(path: &std::path::Path) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("allowlist {}: {e}", path.display()))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            parse_entry(entry).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            entries.push(entry.to_string());
        }
        Ok(entries)
    }

    /// Whether `target` (its URL's host, and the address it resolved to)
    /// may be loaded; `Err` says why not, for the controller's log.
    pub fn check(&self, target: &Target) -> Result<(), String> {
        let (ip, port) = (target.addr.ip(), target.addr.port());
        let host = target.url.host.to_ascii_lowercase();
        let allowed = if self.0.is_empty() {
            ip.is_loopback()
        } else {
            self.0.iter().any(|e| match e {
                Entry::Host(h, p) => *h == host && p.is_none_or(|p| p == port),
                Entry::Ip(a, p) => *a == ip && p.is_none_or(|p| p == port),
                Entry::Cidr(net, bits) => in_block(ip, *net, *bits),
            })
        };
        if allowed {
            return Ok(());
        }
        let rule = if self.0.is_empty() {
            "it allows loopback targets only (start it with --allow-target HOST[:PORT] or a CIDR)".to_string()
        } else {
            format!("it allows {} only", self.describe())
        };
        Err(format!("this worker refuses target {} ({}): {rule}", target.url.authority, target.addr))
    }

    fn describe(&self) -> String {
        let show = |e: &Entry| match e {
            Entry::Host(h, Some(p)) => format!("{h}:{p}"),
            Entry::Host(h, None) => h.clone(),
            Entry::Ip(a, Some(p)) => format!("{}", std::net::SocketAddr::new(*a, *p)),
            Entry::Ip(a, None) => a.to_string(),
            Entry::Cidr(a, b) => format!("{a}/{b}"),
        };
        self.0.iter().map(show).collect::<Vec<_>>().join(", ")
    }
}

fn parse_entry(v: &str) -> Result<Entry, String> {
    let bad =
        |why: &str| format!("--allow-target {v:?}: {why} (give HOST, HOST:PORT, IP, IP:PORT or IP/BITS)");
    if v.is_empty() {
        return Err(bad("empty"));
    }
    if let Some((net, bits)) = v.split_once('/') {
        let net: IpAddr = net.parse().map_err(|_| bad("not an address block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| bad("bad prefix length"))?;
        return Ok(Entry::Cidr(net, bits));
    }
    if let Ok(ip) = v.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(Entry::Ip(ip, None));
    }
    if let Ok(sa) = v.parse::<std::net::SocketAddr>() {
        return Ok(Entry::Ip(sa.ip(), Some(sa.port())));
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad("bad port"))?)),
        None => (v, None),
    };
    let ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
    if !ok {
        return Err(bad("not a host name"));
    }
    Ok(Entry::Host(host.to_ascii_lowercase(), port))
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_lists_entries_and_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("stampede-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "# the lab\n10.0.0.0/8   # workers' network\n\nrelay.test:443\n").unwrap();
        assert_eq!(Allowlist::read_file(&good).unwrap(), ["10.0.0.0/8", "relay.test:443"]);
        let bad = dir.join("bad");
        std::fs::write(&bad, "10.0.0.0/8\n10.0.0.0/99\n").unwrap();
        let err = Allowlist::read_file(&bad).unwrap_err();
        assert!(err.contains("bad:2: --allow-target \"10.0.0.0/99\": bad prefix length"), "{err}");
        assert!(Allowlist::read_file(&dir.join("missing")).unwrap_err().contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn target(url: &str) -> Target {
        Target::resolve(url).await.unwrap()
    }

    fn list(v: &[&str]) -> Allowlist {
        Allowlist::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[tokio::test]
    async fn loopback_only_by_default_and_entries_widen_it() {
        let local = target("ws://127.0.0.1:9001/ws").await;
        let lan = target("ws://10.1.2.3:443/ws").await;
        assert_eq!(Allowlist::default().check(&local), Ok(()));
        let err = Allowlist::default().check(&lan).unwrap_err();
        assert!(err.contains("10.1.2.3:443") && err.contains("loopback targets only"), "{err}");
        assert_eq!(list(&["10.0.0.0/8"]).check(&lan), Ok(()));
        assert_eq!(list(&["10.1.2.3"]).check(&lan), Ok(()));
        assert_eq!(list(&["10.1.2.3:443"]).check(&lan), Ok(()));
        assert!(list(&["10.1.2.3:80"]).check(&lan).is_err());
        assert!(list(&["10.1.2.0/24"]).check(&local).is_err(), "an allowlist replaces the default");
        assert!(list(&["11.0.0.0/8", "::1"]).check(&lan).unwrap_err().contains("11.0.0.0/8, ::1"));
        let named = target("ws://localhost:9001/").await;
        assert_eq!(list(&["LOCALHOST:9001"]).check(&named), Ok(()));
        assert!(list(&["localhost:9002"]).check(&named).is_err());
        assert_eq!(list(&["0.0.0.0/0"]).check(&lan), Ok(()));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["", "10.0.0.0/33", "host:port", "a b", "x/8"] {
            let err = Allowlist::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
