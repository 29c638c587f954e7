//! Outbound safety for every request the system makes for a user (edge webhooks,
//! `http.request`, the LLM base URL): only http(s), and never an address inside a private
//! network — loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved — in
//! any spelling (decimal, octal and hex IPv4, IPv4 inside IPv6), nor a local name, unless an
//! explicit allow-list (`OUTBOUND_ALLOW`) opens it.
//!
//! Two checks: [`check_url`] on the URL alone (at enqueue and at every redirect hop: scheme,
//! literal addresses, local names), and [`check_addr`] on each address a name resolves to (the
//! native consumer's resolver, at connect time). Parsing is the `url` crate's, which reads
//! hosts the way browsers do (`http://0x7f.1/` is 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// One allow-list entry: a host name, an address or a network, optionally with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Name(String),
    Net(IpAddr, u8),
}

/// What may be reached although private: entries separated by commas, each a host name, an
/// IP address or a CIDR network, optionally followed by `:port` (IPv6 in brackets to carry a
/// port): `127.0.0.1:8080, [::1]:9000, 10.0.0.0/8, hooks.internal:443`. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    entries: Vec<(Target, Option<u16>)>,
}

impl Allow {
    /// Parses an allow-list; the error names the entry that is not one.
    pub fn parse(s: &str) -> Result<Allow, String> {
        let mut entries = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            entries.push(parse_entry(raw).ok_or_else(|| {
                format!("{raw:?} is not a host, an IP address or a CIDR network, with an optional :port")
            })?);
        }
        Ok(Allow { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a name entry opens `host` on `port`: that name, whatever it resolves to, on
    /// the entry's port (any port when the entry has none).
    pub fn allows_name(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.');
        self.entries
            .iter()
            .any(|(t, p)| matches!(t, Target::Name(n) if n.eq_ignore_ascii_case(host)) && p.is_none_or(|p| p == port))
    }

    /// Whether an address or network entry opens `ip` on `port` (an entry without a port
    /// opens every port).
    pub fn allows_ip(&self, ip: IpAddr, port: u16) -> bool {
        let ip = canonical(ip);
        self.entries
            .iter()
            .any(|(t, p)| matches!(t, Target::Net(net, len) if in_net(ip, *net, *len)) && p.is_none_or(|p| p == port))
    }

    /// Whether an entry without a port opens `host` (a name entry) or `ip` (an address or
    /// network entry) on every port: what a check that does not know the port may let pass.
    pub fn allows_every_port(&self, host: &str, ip: IpAddr) -> bool {
        let (host, ip) = (host.trim_end_matches('.'), canonical(ip));
        self.entries.iter().any(|(t, p)| {
            p.is_none()
                && match t {
                    Target::Name(n) => n.eq_ignore_ascii_case(host),
                    Target::Net(net, len) => in_net(ip, *net, *len),
                }
        })
    }
}

fn parse_entry(raw: &str) -> Option<(Target, Option<u16>)> {
    // `[v6]`, `[v6]:port`, `[v6]/len`, `[v6]/len:port`
    if let Some(rest) = raw.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = addr.parse().ok()?;
        let (len, port) = match after {
            "" => (128, None),
            _ => {
                let (len_part, port_part) = match after.strip_prefix('/') {
                    Some(l) => match l.split_once(':') {
                        Some((l, p)) => (Some(l), Some(p)),
                        None => (Some(l), None),
                    },
                    None => (None, Some(after.strip_prefix(':')?)),
                };
                let len = match len_part {
                    Some(l) => l.parse::<u8>().ok().filter(|l| *l <= 128)?,
                    None => 128,
                };
                (len, port_part.map(|p| p.parse::<u16>().ok()).map_or(Some(None), |p| p.map(Some))?)
            }
        };
        return Some((Target::Net(IpAddr::V6(ip), len), port));
    }
    // A bare IPv6 address or network (no port possible without brackets).
    if raw.matches(':').count() > 1 {
        let (addr, len) = match raw.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 128)?),
            None => (raw, 128),
        };
        return Some((Target::Net(IpAddr::V6(addr.parse().ok()?), len), None));
    }
    let (main, port) = match raw.rsplit_once(':') {
        Some((m, p)) => (m, Some(p.parse::<u16>().ok()?)),
        None => (raw, None),
    };
    if let Some((addr, len)) = main.split_once('/') {
        let ip: Ipv4Addr = addr.parse().ok()?;
        let len = len.parse::<u8>().ok().filter(|l| *l <= 32)?;
        return Some((Target::Net(IpAddr::V4(ip), len), port));
    }
    if let Ok(ip) = main.parse::<Ipv4Addr>() {
        return Some((Target::Net(IpAddr::V4(ip), 32), port));
    }
    let name = main.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    valid.then_some((Target::Name(name), port))
}

/// IPv4 addresses carried inside IPv6 (mapped, compatible, NAT64, 6to4) are judged as the
/// IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated) — but not :: or ::1.
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail()),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail()),
        // ::ffff:0:a.b.c.d, SIIT's IPv4-translated addresses (RFC 7915): not the mapped
        // form above, but a translator sends them to the same IPv4 address.
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail()),
        // 64:ff9b::/96, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        // 64:ff9b:1::/48, the local-use NAT64 prefix (RFC 8215), in its /96 form. A network
        // may use the prefix at another length (RFC 6052 puts the IPv4 address elsewhere);
        // those addresses are refused whole by `private_reason`.
        [0x64, 0xff9b, 1, 0, 0, 0, _, _] => Some(tail()),
        // 2002:aabb:ccdd::/48, 6to4.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = len.min(32) as u32;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = len.min(128) as u32;
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Why an address is not a public one, or `None` when it is.
pub fn private_reason(ip: IpAddr) -> Option<&'static str> {
    const V4: &[(Ipv4Addr, u8, &str)] = &[
        (Ipv4Addr::new(0, 0, 0, 0), 8, "the unspecified network"),
        (Ipv4Addr::new(10, 0, 0, 0), 8, "a private network"),
        (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade NAT (and some cloud metadata)"),
        (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
        (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local (cloud metadata)"),
        (Ipv4Addr::new(172, 16, 0, 0), 12, "a private network"),
        (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
        (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
        (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relays"),
        (Ipv4Addr::new(192, 168, 0, 0), 16, "a private network"),
        (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
        (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
        (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
        (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
        (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (and broadcast)"),
    ];
    const V6: &[(Ipv6Addr, u8, &str)] = &[
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128, "the unspecified address"),
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128, "loopback"),
        // What is left of ::/96 once IPv4-compatible addresses are read as IPv4 (::0.0.a.b).
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "the IPv4-compatible range"),
        (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, "local-use NAT64 (an IPv4 address of any network)"),
        (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard"),
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23, "IETF special purpose"),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, "documentation"),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "unique local (and cloud metadata)"),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
    ];
    match canonical(ip) {
        IpAddr::V4(v4) => V4.iter().find(|(n, l, _)| in_net(IpAddr::V4(v4), IpAddr::V4(*n), *l)).map(|(_, _, r)| *r),
        // Compared as written: `in_net` would read a prefix such as 64:ff9b:1:: as IPv4.
        IpAddr::V6(v6) => V6
            .iter()
            .find(|(n, l, _)| {
                let mask = if *l == 0 { 0 } else { u128::MAX << (128 - u32::from((*l).min(128))) };
                u128::from(v6) & mask == u128::from(*n) & mask
            })
            .map(|(_, _, r)| *r),
    }
}

/// Names that only mean something inside a network: `localhost` and its subdomains, single
/// labels (resolved through search domains), and the suffixes reserved for local use.
pub fn is_local_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    const SUFFIXES: &[&str] = &[".localhost", ".local", ".internal", ".home.arpa", ".lan", ".intranet", ".corp"];
    h == "localhost" || !h.contains('.') || SUFFIXES.iter().any(|s| h.ends_with(s))
}

/// Longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;

/// Checks a URL before any connection: http(s) only, and unless the allow-list opens it, no
/// literal address inside a private network and no local name. Returns the parsed URL.
pub fn check_url(raw: &str, allow: &Allow) -> Result<Url, String> {
    if raw.len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must be an http:// or https:// URL, not {}:", url.scheme()));
    }
    if has_userinfo(raw, &url) {
        return Err(USERINFO_REFUSED.to_owned());
    }
    let port = url.port_or_known_default().unwrap_or(80);
    match url.host() {
        None => Err("has no host".to_owned()),
        Some(Host::Ipv4(v4)) => check_addr(IpAddr::V4(v4), port, allow).map(|()| url.clone()),
        Some(Host::Ipv6(v6)) => check_addr(IpAddr::V6(v6), port, allow).map(|()| url.clone()),
        Some(Host::Domain(name)) => {
            if is_local_name(name) && !allow.allows_name(name, port) {
                Err(format!("names a host inside a private network ({name}); OUTBOUND_ALLOW can open it"))
            } else {
                Ok(url.clone())
            }
        }
    }
}

/// Why a URL with credentials is refused.
pub const USERINFO_REFUSED: &str =
    "must not carry credentials (user:password@); send them in payload.headers, whose values are sealed";

/// Whether a URL carries userinfo (`user:pass@`, `user@`, even an empty `@`): the parsed
/// form drops an empty one, so the authority as written is looked at too.
pub fn has_userinfo(raw: &str, url: &Url) -> bool {
    if !url.username().is_empty() || url.password().is_some() {
        return true;
    }
    let after_scheme = raw.split_once(':').map_or(raw, |(_, rest)| rest.trim_start_matches(['/', '\\']));
    let authority = after_scheme.split(['/', '\\', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// Whether a header must not be sent for a user: it steers how the request is routed or
/// framed (`host`, hop-by-hop headers, `content-length`, `transfer-encoding`), claims
/// something about the client a proxy would trust (`forwarded`, `x-forwarded-*`,
/// `x-real-ip`, `proxy-*`), or impersonates the system (`x-edgejobs-*`). Case-insensitive.
pub fn forbidden_header(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "host",
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "forwarded",
        "x-real-ip",
    ];
    const PREFIXES: &[&str] = &["proxy-", "x-forwarded-", "x-edgejobs-"];
    let n = name.trim().to_ascii_lowercase();
    EXACT.contains(&n.as_str()) || n == "x-forwarded" || PREFIXES.iter().any(|p| n.starts_with(p))
}

/// Header names [`forbidden_header`] refuses, one per rule and spelling (unit and e2e tests).
pub const FORBIDDEN_HEADER_EXAMPLES: &[&str] = &[
    "Host",
    "connection",
    "Keep-Alive",
    "Content-Length",
    "transfer-encoding",
    "TE",
    "trailer",
    "Upgrade",
    "Proxy-Authorization",
    "proxy-connection",
    "Forwarded",
    "X-Forwarded-For",
    "x-forwarded-host",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "X-EdgeJobs-Job-Id",
    "x-edgejobs-attempt",
    "X-EDGEJOBS-TYPE",
];

/// Checks one address a connection would go to (a literal host, or each address a name
/// resolved to).
pub fn check_addr(ip: IpAddr, port: u16, allow: &Allow) -> Result<(), String> {
    match private_reason(ip) {
        Some(_) if allow.allows_ip(ip, port) => Ok(()),
        Some(why) => Err(format!("points to {why} ({ip}); OUTBOUND_ALLOW can open it")),
        None => Ok(()),
    }
}

/// A URL without its query and fragment (and credentials), for errors and logs: a query
/// string often carries a token.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => raw.split(['?', '#']).next().unwrap_or_default().chars().take(200).collect(),
    }
}

/// URLs the guard refuses, one per spelling of a private or local target we know of (and
/// schemes that are not http); the unit tests and the e2e hostile suite both go through it.
pub const REFUSED_EXAMPLES: &[&str] = &[
    "http://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f000001/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://0.0.0.0/",
    "http://0/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[fe80::1]/",
    "http://localhost:9090/metrics",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://metadata.google.internal/",
    "http://metadata/",
    "http://printer.local/",
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "javascript:alert(1)",
    "http:///path",
    "not a url",
    "http://10.0.0.1/",
    "http://192.168.0.1/",
    "http://localhost/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    // IPv4 inside NAT64 (well-known and local-use) and SIIT addresses.
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",
    "http://[64:ff9b:1::7f00:1]:80/",
    "http://[64:ff9b:1:7f00:0:100::]/",
    "http://[::ffff:0:7f00:1]/",
    "http://[::ffff:0:a9fe:a9fe]/",
    "http://[::ffff:0:10.0.0.1]/",
    // Credentials in the URL: refused wherever the host is (they belong in sealed headers).
    "https://user:pass@example.com/",
    "https://token@example.com/",
    "https://:pass@example.com/",
    "https://@example.com/",
    "http://a%40b:c@example.com/",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_private_address_is_refused() {
        let none = Allow::default();
        for bad in REFUSED_EXAMPLES {
            assert!(check_url(bad, &none).is_err(), "{bad} must be refused");
        }
        for good in ["https://example.com/hook", "http://93.184.216.34:8080/x", "https://[2606:4700::1111]/"] {
            assert!(check_url(good, &none).is_ok(), "{good} must pass");
        }
    }

    #[test]
    fn the_allow_list_opens_exactly_what_it_names() {
        let allow = Allow::parse("127.0.0.1:8080, 10.0.0.0/8, hooks.internal:443, [::1]:9000").expect("valid");
        assert!(check_url("http://127.0.0.1:8080/x", &allow).is_ok());
        assert!(check_url("http://127.0.0.1:9090/metrics", &allow).is_err(), "another port stays closed");
        assert!(check_url("http://127.0.0.2:8080/", &allow).is_err());
        assert!(check_url("http://10.9.8.7:1234/", &allow).is_ok());
        assert!(check_url("https://hooks.internal/", &allow).is_ok());
        assert!(check_url("http://hooks.internal/", &allow).is_err(), "port 80 is not 443");
        assert!(check_url("http://[::1]:9000/", &allow).is_ok());
        assert!(check_url("http://[::ffff:127.0.0.1]:8080/", &allow).is_ok(), "the same address, mapped");
        assert!(check_addr("192.168.0.1".parse().expect("ip"), 80, &allow).is_err());
        for bad in ["127.0.0.1:99999", "10.0.0.0/33", "[::1", "exa mple.com", "a:b:c"] {
            assert!(Allow::parse(bad).is_err(), "{bad}");
        }
        assert!(Allow::parse("").expect("empty").is_empty());
    }

    #[test]
    fn nat64_and_siit_addresses_are_judged_as_the_ipv4_they_carry() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        for private in [
            "64:ff9b::7f00:1",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1::10.0.0.1",
            "::ffff:0:7f00:1",
            "::ffff:0:169.254.169.254",
            "::ffff:0:192.168.1.1",
            "::ffff:127.0.0.1",
            // The local-use prefix at a length other than /96 hides the IPv4 address
            // elsewhere: refused whole.
            "64:ff9b:1:5db8:d8:2200::",
            "::0.0.1.2",
        ] {
            assert!(private_reason(ip(private)).is_some(), "{private} is private");
        }
        for public in
            ["64:ff9b::5db8:d822", "64:ff9b:1::93.184.216.34", "::ffff:0:93.184.216.34", "::ffff:93.184.216.34"]
        {
            assert_eq!(private_reason(ip(public)), None, "{public} carries a public IPv4 address");
        }
        // An allow-list entry for an IPv4 address opens it in every IPv6 spelling, on its port only.
        let allow = Allow::parse("127.0.0.1:8080").expect("valid");
        for url in
            ["http://[::ffff:0:7f00:1]:8080/", "http://[64:ff9b:1::7f00:1]:8080/", "http://[64:ff9b::7f00:1]:8080/"]
        {
            assert!(check_url(url, &allow).is_ok(), "{url}");
            assert!(check_url(&url.replace("8080", "8081"), &allow).is_err(), "{url} on another port");
        }
    }

    #[test]
    fn urls_with_credentials_are_refused_even_when_allowed() {
        let allow = Allow::parse("127.0.0.1:8080, hooks.internal").expect("valid");
        for url in [
            "https://user:pass@example.com/",
            "https://user@example.com/",
            "https://:pass@example.com/",
            "https://@example.com/",
            "http://u:p@127.0.0.1:8080/",
            "http://u@hooks.internal/",
            "HTTP://U:P@EXAMPLE.COM/",
        ] {
            let e = check_url(url, &allow).expect_err(url);
            assert_eq!(e, USERINFO_REFUSED, "{url}");
        }
        for url in [
            "https://example.com/a@b",
            "https://example.com/?x=a@b",
            "https://example.com/#@x",
            "http://127.0.0.1:8080/",
        ] {
            assert!(check_url(url, &allow).is_ok(), "{url}");
        }
    }

    #[test]
    fn forbidden_headers_are_refused_in_any_case() {
        for name in FORBIDDEN_HEADER_EXAMPLES {
            assert!(forbidden_header(name), "{name}");
            assert!(forbidden_header(&name.to_ascii_uppercase()), "{name}");
        }
        for name in
            ["authorization", "content-type", "x-api-key", "hostname", "x-forwardedfor-not", "x-edgejob", "accept"]
        {
            assert!(!forbidden_header(name), "{name}");
        }
    }

    #[test]
    fn name_and_port_entries_answer_exactly() {
        let allow = Allow::parse("hooks.internal:443, any.internal, 10.0.0.0/8:9000, 192.168.1.1").expect("valid");
        assert!(allow.allows_name("HOOKS.internal.", 443));
        assert!(!allow.allows_name("hooks.internal", 80));
        assert!(allow.allows_name("any.internal", 1));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(allow.allows_ip(ip("10.1.1.1"), 9000));
        assert!(!allow.allows_ip(ip("10.1.1.1"), 9001));
        assert!(allow.allows_ip(ip("::ffff:0:10.1.1.1"), 9000));
        // Only entries without a port open an address or a name for a check without one.
        assert!(!allow.allows_every_port("x.test", ip("10.1.1.1")));
        assert!(allow.allows_every_port("x.test", ip("192.168.1.1")));
        assert!(allow.allows_every_port("any.internal", ip("10.1.1.1")));
        assert!(!allow.allows_every_port("hooks.internal", ip("10.1.1.1")));
    }

    #[test]
    fn redacted_urls_drop_queries_and_credentials() {
        assert_eq!(redact_url("https://u:p@h.example/a?token=s3cret#f"), "https://h.example/a");
        assert_eq!(redact_url("nonsense?token=s3cret"), "nonsense");
    }

    proptest::proptest! {
        #[test]
        fn checks_are_total(s in "\\PC{0,80}", a in "\\PC{0,40}") {
            let allow = Allow::parse(&a).unwrap_or_default();
            let _ = check_url(&s, &allow);
            let _ = redact_url(&s);
        }
    }
}
