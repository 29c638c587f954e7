//! The HTTP client handlers use for requests made for a user (`http.request`, the LLM API):
//! it refuses to connect inside a private network (`edgejobs_core::outbound`) unless
//! `EDGEJOBS_OUTBOUND_ALLOW` opens the address (or the name) on the request's port.
//!
//! Requests go through [`Guard::send`], which follows redirects itself (the client follows
//! none): each hop is checked like the first URL — the URL, then each address its name
//! resolves to, with the hop's port — and the headers that carry secrets (the user's
//! `payload.headers`, the LLM API key) go only to the first URL's origin (scheme, host and
//! port): a hop to another origin gets the request without them, and so does every later
//! hop. A resolver checks again at connect time (a name that changed meanwhile still cannot
//! reach a private address): hyper asks it with a name only, so [`Guard::send`] records the
//! port of each request in flight per name, and an address passes only if it may be reached
//! on every such port. Last, the address the answer came from is checked with its port. No
//! proxy from the environment is used (it would connect on the client's behalf, unchecked).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgejobs_core::outbound::{Allow, check_addr, check_url, private_reason, redact_url};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;

/// Most redirects a request follows.
pub const MAX_REDIRECTS: usize = 5;

/// Where names go: the system resolver, or fixed answers (`EDGEJOBS_RESOLVE`, like curl's
/// `--resolve`; tests point names at loopback with it), and the rules they must pass.
#[derive(Debug, Default)]
pub struct Guard {
    pub allow: Allow,
    pub fixed: HashMap<String, Vec<IpAddr>>,
    /// The port of every request in flight, per host name (a name twice on one port is
    /// listed twice): what the connect-time resolver checks addresses against.
    in_flight: Mutex<HashMap<String, Vec<u16>>>,
}

/// Why [`Guard::send`] did not get an answer.
#[derive(Debug)]
pub enum SendError {
    /// The outbound rules refuse the URL or a redirect: permanent, retrying meets the same
    /// rule. The text names URLs without their query.
    Refused(String),
    /// The network failed (an address refused at connect time included): retryable.
    Network(reqwest::Error),
}

/// One request for a user.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: reqwest::Method,
    pub url: &'a str,
    /// Sent to the first URL's origin only (the user's headers, an API key).
    pub secret_headers: &'a [(String, String)],
    /// Sent on every hop (the job id, the attempt).
    pub headers: &'a [(&'static str, String)],
    /// A JSON body (dropped when a redirect turns the request into a GET).
    pub json: Option<&'a Value>,
    /// When the whole exchange, redirects included, must be over.
    pub deadline: Instant,
    /// The attempt the request is made for (#32): each hop is a client span under it, and
    /// carries that span's `traceparent`.
    pub trace: Option<&'a crate::telemetry::Traced>,
}

impl Guard {
    pub fn new(allow: Allow, fixed: HashMap<String, Vec<IpAddr>>) -> Guard {
        Guard { allow, fixed, in_flight: Mutex::new(HashMap::new()) }
    }

    /// The addresses of `host` (fixed answers first).
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Some(ips) = self.fixed.get(&host.to_ascii_lowercase()) {
            return Ok(ips.clone());
        }
        let found = tokio::net::lookup_host((host, 0)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
        Ok(found.map(|a| a.ip()).collect())
    }

    /// Checks a URL before a request: the URL itself, then — for a name no name entry of
    /// the allow-list opens on this port — each address it resolves to, with the request's
    /// port.
    pub async fn check(&self, raw: &str) -> Result<reqwest::Url, String> {
        let url = check_url(raw, &self.allow)?;
        let port = url.port_or_known_default().unwrap_or(80);
        if let Some(url::Host::Domain(name)) = url.host() {
            if self.allow.allows_name(name, port) {
                return Ok(url);
            }
            let ips = self.lookup(name).await?;
            if ips.is_empty() {
                return Err(format!("{name} has no address"));
            }
            for ip in ips {
                check_addr(ip, port, &self.allow).map_err(|e| format!("{name} {e}"))?;
            }
        }
        Ok(url)
    }

    /// Whether a connection to `host` (the URL's host: a name, or the address itself) may
    /// go to `ip` on every port of `ports`; with no port known, only what is open on every
    /// port passes.
    fn connectable(&self, host: &str, ip: IpAddr, ports: &[u16]) -> bool {
        if private_reason(ip).is_none() {
            return true;
        }
        if ports.is_empty() {
            return self.allow.allows_every_port(host, ip);
        }
        ports.iter().all(|p| self.allow.allows_ip(ip, *p) || self.allow.allows_name(host, *p))
    }

    fn ports_in_flight(&self, host: &str) -> Vec<u16> {
        let map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&host.to_ascii_lowercase()).cloned().unwrap_or_default()
    }

    /// Records a request to `url` in flight until the returned value is dropped.
    fn pin(&self, url: &reqwest::Url) -> Pin<'_> {
        let key = match url.host() {
            Some(url::Host::Domain(name)) => {
                let key = (name.to_ascii_lowercase(), url.port_or_known_default().unwrap_or(80));
                let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                map.entry(key.0.clone()).or_default().push(key.1);
                Some(key)
            }
            _ => None,
        };
        Pin { guard: self, key }
    }

    /// Sends `out`, following at most [`MAX_REDIRECTS`] redirects by hand: every hop passes
    /// [`Guard::check`]; the secret headers go to the first URL's origin only (once a hop
    /// leaves it they are never sent again); 307 and 308 repeat the request, the other
    /// redirects continue with a GET without a body (as the edge's webhooks do).
    pub async fn send(&self, client: &reqwest::Client, out: Outgoing<'_>) -> Result<reqwest::Response, SendError> {
        let mut url = self
            .check(out.url)
            .await
            .map_err(|e| SendError::Refused(format!("{} refused: {e}", redact_url(out.url))))?;
        let origin = url.origin();
        let mut at_home = true;
        let (mut method, mut body) = (out.method, out.json);
        for hop in 0..=MAX_REDIRECTS {
            at_home &= url.origin() == origin;
            let pin = self.pin(&url);
            let mut req = client
                .request(method.clone(), url.clone())
                .timeout(out.deadline.saturating_duration_since(Instant::now()));
            if at_home {
                for (k, v) in out.secret_headers {
                    req = req.header(k.as_str(), v.as_str());
                }
            }
            for (k, v) in out.headers {
                req = req.header(*k, v.as_str());
            }
            let span = out.trace.map(|t| t.outbound(method.as_str(), &url));
            for (k, v) in span.iter().flat_map(|s| s.traceparent().headers()) {
                req = req.header(k, v);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if let Some(s) = span {
                        s.finish(None, Some(if e.is_timeout() { "timeout" } else { "connect" }));
                    }
                    return Err(SendError::Network(e));
                }
            };
            if let Some(s) = span {
                s.finish(Some(resp.status().as_u16()), None);
            }
            drop(pin);
            if let Some(peer) = resp.remote_addr()
                && !self.connectable(url.host_str().unwrap_or_default(), peer.ip(), &[peer.port()])
            {
                return Err(SendError::Refused(format!(
                    "{} answered from {peer}, which the outbound rules do not open",
                    redact_url(url.as_str())
                )));
            }
            let status = resp.status().as_u16();
            let location = resp.headers().get(reqwest::header::LOCATION).cloned();
            let (true, Some(location)) = (matches!(status, 301 | 302 | 303 | 307 | 308), location) else {
                return Ok(resp);
            };
            if hop == MAX_REDIRECTS {
                return Err(SendError::Refused(format!(
                    "{} redirected more than {MAX_REDIRECTS} times",
                    redact_url(out.url)
                )));
            }
            let next = location.to_str().ok().and_then(|l| url.join(l).ok()).ok_or_else(|| {
                SendError::Refused(format!("{} redirected to an invalid URL", redact_url(url.as_str())))
            })?;
            url = self
                .check(next.as_str())
                .await
                .map_err(|e| SendError::Refused(format!("redirect to {} refused: {e}", redact_url(next.as_str()))))?;
            if !matches!(status, 307 | 308) {
                method = reqwest::Method::GET;
                body = None;
            }
        }
        Err(SendError::Refused(format!("{} redirected more than {MAX_REDIRECTS} times", redact_url(out.url))))
    }

    /// Parses `EDGEJOBS_RESOLVE`: `name=ip[+ip...],...`.
    pub fn parse_fixed(s: &str) -> Result<HashMap<String, Vec<IpAddr>>, String> {
        let mut out = HashMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, ips) = entry.split_once('=').ok_or_else(|| format!("{entry:?} must look like name=ip"))?;
            let ips = ips
                .split('+')
                .map(|ip| ip.trim().parse::<IpAddr>().map_err(|_| format!("{entry:?}: {ip:?} is not an IP address")))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert(name.trim().to_ascii_lowercase(), ips);
        }
        Ok(out)
    }
}

/// A request in flight to a name on a port; dropping it forgets the request.
struct Pin<'a> {
    guard: &'a Guard,
    key: Option<(String, u16)>,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let Some((name, port)) = self.key.take() else { return };
        let mut map = self.guard.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ports) = map.get_mut(&name) {
            if let Some(i) = ports.iter().position(|p| *p == port) {
                ports.swap_remove(i);
            }
            if ports.is_empty() {
                map.remove(&name);
            }
        }
    }
}

/// The connect-time filter.
#[derive(Debug)]
struct Resolver(Arc<Guard>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = guard.lookup(&host).await?;
            let ports = guard.ports_in_flight(&host);
            let allowed: Vec<SocketAddr> = ips
                .into_iter()
                .filter(|ip| guard.connectable(&host, *ip, &ports))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty() {
                return Err(format!("refused to connect: {host} resolves only to addresses the outbound rules do not open on port {ports:?}").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Builds the guarded client. It follows no redirect itself: [`Guard::send`] does.
pub fn client(guard: Arc<Guard>) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("edgejobs-consumer/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .dns_resolver(Arc::new(Resolver(guard)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &str, fixed: &str) -> Guard {
        Guard::new(Allow::parse(allow).expect("valid"), Guard::parse_fixed(fixed).expect("valid"))
    }

    #[tokio::test]
    async fn names_that_resolve_inside_a_private_network_are_refused_before_connecting() {
        let g = Arc::new(guard(
            "127.0.0.1:4000",
            "evil.test=127.0.0.1, meta.test=169.254.169.254, mixed.test=93.184.216.34+10.0.0.1, ok.test=93.184.216.34",
        ));
        assert!(g.check("http://evil.test:9090/metrics").await.is_err(), "loopback on a port not allowed");
        assert!(g.check("http://evil.test:4000/hook").await.is_ok(), "the allowed port");
        assert!(g.check("http://meta.test/latest/meta-data").await.is_err());
        assert!(g.check("http://mixed.test/").await.is_err(), "one private address is enough to refuse");
        assert!(g.check("http://ok.test/").await.is_ok());
        assert!(g.check("http://127.0.0.1:9090/").await.is_err(), "literal addresses too");
        let resolved = Resolver(Arc::clone(&g)).resolve("meta.test".parse().expect("name")).await;
        assert!(resolved.is_err(), "the connect-time filter drops metadata addresses");
        let resolved = Resolver(Arc::clone(&g)).resolve("mixed.test".parse().expect("name")).await;
        let addrs: Vec<SocketAddr> = resolved.expect("the public one").collect();
        assert_eq!(addrs, vec![SocketAddr::new("93.184.216.34".parse().expect("ip"), 0)]);
    }

    #[tokio::test]
    async fn the_connect_time_filter_knows_the_port_of_each_request_in_flight() {
        let g = Arc::new(guard("127.0.0.1:4000", "evil.test=127.0.0.1"));
        let resolve = || Resolver(Arc::clone(&g)).resolve("evil.test".parse().expect("name"));
        // No request in flight: an address open on one port only does not pass.
        assert!(resolve().await.is_err(), "a port-bound entry opens nothing without the port");
        let allowed = g.pin(&"http://evil.test:4000/".parse().expect("url"));
        assert_eq!(resolve().await.expect("open on 4000").count(), 1);
        {
            // A second request to the same name on another port: both must be open.
            let _other = g.pin(&"http://evil.test:9090/".parse().expect("url"));
            assert!(resolve().await.is_err(), "port 9090 is not open");
        }
        assert_eq!(resolve().await.expect("9090 is gone").count(), 1);
        drop(allowed);
        assert!(g.ports_in_flight("evil.test").is_empty(), "dropped pins are forgotten");
    }

    #[tokio::test]
    async fn a_name_entry_opens_that_name_on_its_port_whatever_it_resolves_to() {
        let g = Arc::new(guard("hooks.internal:8443, any.internal", "hooks.internal=10.1.2.3, any.internal=10.9.9.9"));
        assert!(g.check("http://hooks.internal:8443/x").await.is_ok());
        assert!(g.check("http://hooks.internal:8444/x").await.is_err(), "another port stays closed");
        assert!(g.check("http://any.internal:1/").await.is_ok(), "an entry without a port opens every port");
        let _pin = g.pin(&"http://hooks.internal:8443/".parse().expect("url"));
        assert!(Resolver(Arc::clone(&g)).resolve("hooks.internal".parse().expect("name")).await.is_ok());
        assert!(!g.connectable("hooks.internal", "10.1.2.3".parse().expect("ip"), &[8444]));
        assert!(!g.connectable("other.test", "10.1.2.3".parse().expect("ip"), &[8443]), "the name, not its address");
    }

    /// A loopback server recording each request's path and headers, answering `route`'s
    /// (status, location) for a path; every connection is closed after one answer.
    type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

    async fn fake(route: fn(&str) -> (u16, Option<String>)) -> (u16, Seen) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut lines = head.split("\r\n");
                let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                log.lock().expect("log").push((path.clone(), headers));
                let (status, location) = route(&path);
                let location = location.map(|l| format!("location: {l}\r\n")).unwrap_or_default();
                let answer = format!("HTTP/1.1 {status} X\r\n{location}connection: close\r\ncontent-length: 0\r\n\r\n");
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        });
        (port, seen)
    }

    fn paths(seen: &Seen) -> Vec<String> {
        seen.lock().expect("log").iter().map(|(p, _)| p.clone()).collect()
    }

    async fn send(g: &Arc<Guard>, url: &str) -> Result<reqwest::Response, SendError> {
        let client = client(Arc::clone(g)).expect("client");
        let secret =
            [("x-api-key".to_owned(), "s3cret".to_owned()), ("authorization".to_owned(), "Bearer t".to_owned())];
        let out = Outgoing {
            trace: None,
            method: reqwest::Method::POST,
            url,
            secret_headers: &secret,
            headers: &[("x-edgejobs-job-id", "j1".to_owned())],
            json: Some(&Value::Null),
            deadline: Instant::now() + std::time::Duration::from_secs(10),
        };
        g.send(&client, out).await
    }

    static OTHER: std::sync::OnceLock<u16> = std::sync::OnceLock::new();

    #[tokio::test]
    async fn secret_headers_stay_with_the_first_origin_across_redirects() {
        // The second origin: another port of loopback, open in the allow-list.
        let (other, other_seen) = fake(|_| (200, None)).await;
        OTHER.set(other).expect("once");
        let (home, home_seen) = fake(|p| match p {
            "/same" => (307, Some("/landing".into())),
            "/away" => (302, Some(format!("http://127.0.0.1:{}/there", OTHER.get().expect("set")))),
            "/away-and-back" => (307, Some(format!("http://127.0.0.1:{}/there", OTHER.get().expect("set")))),
            _ => (200, None),
        })
        .await;
        let g = Arc::new(guard(&format!("127.0.0.1:{home},127.0.0.1:{other}"), ""));
        let resp = send(&g, &format!("http://127.0.0.1:{home}/same")).await.expect("followed");
        assert_eq!(resp.status().as_u16(), 200);
        {
            let seen = home_seen.lock().expect("log");
            assert_eq!(seen.len(), 2, "{seen:?}");
            for (path, h) in seen.iter() {
                assert_eq!(h.get("x-api-key").map(String::as_str), Some("s3cret"), "same origin keeps them: {path}");
                assert!(h.contains_key("authorization"), "{path}");
            }
        }
        let resp = send(&g, &format!("http://127.0.0.1:{home}/away")).await.expect("followed");
        assert_eq!(resp.status().as_u16(), 200);
        let seen = other_seen.lock().expect("log").clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (_, h) = &seen[0];
        assert!(!h.contains_key("x-api-key") && !h.contains_key("authorization"), "another origin gets none: {h:?}");
        assert_eq!(h.get("x-edgejobs-job-id").map(String::as_str), Some("j1"), "system headers go on every hop");
        assert!(paths(&home_seen).contains(&"/away".to_owned()));
    }

    #[tokio::test]
    async fn a_redirect_to_a_port_the_allow_list_does_not_open_is_refused_before_connecting() {
        let (closed, closed_seen) = fake(|_| (200, None)).await;
        let (home, _) = fake(|p| match p.strip_prefix("/to/") {
            Some(to) => (302, Some(to.replace("%3A", ":").replace("%2F", "/"))),
            None => (200, None),
        })
        .await;
        let g = Arc::new(guard(&format!("127.0.0.1:{home}"), "alias.test=127.0.0.1"));
        for target in [format!("http://127.0.0.1:{closed}/x"), format!("http://alias.test:{closed}/x")] {
            let hop = format!("http://127.0.0.1:{home}/to/{}", target.replace(':', "%3A").replace('/', "%2F"));
            match send(&g, &hop).await {
                Err(SendError::Refused(e)) => assert!(e.contains("redirect") && e.contains("refused"), "{e}"),
                other => panic!("{target}: {other:?}"),
            }
        }
        // A name of an allowed address, asked directly on a closed port: refused too.
        assert!(matches!(send(&g, &format!("http://alias.test:{closed}/")).await, Err(SendError::Refused(_))));
        assert!(closed_seen.lock().expect("log").is_empty(), "nothing reached the closed port");
        // The allowed port by that name passes.
        assert!(send(&g, &format!("http://alias.test:{home}/ok")).await.is_ok());
    }

    #[tokio::test]
    async fn urls_with_credentials_and_endless_redirects_are_refused() {
        let (home, seen) = fake(|p| (302, Some(format!("{p}x")))).await;
        let g = Arc::new(guard(&format!("127.0.0.1:{home}"), ""));
        match send(&g, &format!("http://user:pw@127.0.0.1:{home}/")).await {
            Err(SendError::Refused(e)) => assert!(e.contains("credentials") && !e.contains("pw"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(seen.lock().expect("log").is_empty());
        match send(&g, &format!("http://127.0.0.1:{home}/")).await {
            Err(SendError::Refused(e)) => assert!(e.contains("redirected more than 5 times"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.lock().expect("log").len(), MAX_REDIRECTS + 1);
    }

    #[test]
    fn fixed_answers_parse_or_name_the_bad_entry() {
        assert!(Guard::parse_fixed("a=1.2.3.4+::1,b=10.0.0.1").is_ok());
        assert!(Guard::parse_fixed("a").is_err());
        assert!(Guard::parse_fixed("a=nope").is_err());
    }
}
