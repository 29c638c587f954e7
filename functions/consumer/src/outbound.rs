//! The HTTP client handlers use for requests made for a user (`http.request`, the LLM API):
//! it refuses to connect inside a private network (`edgejobs_core::outbound`) unless
//! `EDGEJOBS_OUTBOUND_ALLOW` opens the address.
//!
//! Three checks, because each sees something the others cannot: [`check`] before a request
//! (the URL, and for a name, its addresses with the request's port); a resolver that drops
//! every address not allowed at connect time (a name that changed meanwhile still cannot
//! reach a private address; it does not know the port, so an address allowed for one port
//! passes it); and a redirect policy that checks each hop and follows at most five. No proxy
//! from the environment is used (it would connect on the client's behalf, unchecked).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use edgejobs_core::outbound::{Allow, check_addr, check_url, redact_url};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Most redirects a request follows.
pub const MAX_REDIRECTS: usize = 5;

/// Where names go: the system resolver, or fixed answers (`EDGEJOBS_RESOLVE`, like curl's
/// `--resolve`; tests point names at loopback with it).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub allow: Allow,
    pub fixed: HashMap<String, Vec<IpAddr>>,
}

impl Guard {
    /// The addresses of `host` (fixed answers first).
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Some(ips) = self.fixed.get(&host.to_ascii_lowercase()) {
            return Ok(ips.clone());
        }
        let found = tokio::net::lookup_host((host, 0)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
        Ok(found.map(|a| a.ip()).collect())
    }

    /// Checks a URL before a request: the URL itself, then — for a name — each address it
    /// resolves to, with the request's port.
    pub async fn check(&self, raw: &str) -> Result<reqwest::Url, String> {
        let url = check_url(raw, &self.allow)?;
        let port = url.port_or_known_default().unwrap_or(80);
        if let Some(url::Host::Domain(name)) = url.host() {
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

/// The connect-time filter.
#[derive(Debug)]
struct Resolver(Arc<Guard>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = guard.lookup(&host).await?;
            // The port is not known here: an address passes when some allow-list entry
            // covers it (the port was checked before the request).
            let allowed: Vec<SocketAddr> = ips
                .into_iter()
                .filter(|ip| allowed_any_port(&guard.allow, *ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty() {
                return Err(format!("refused to connect: {host} resolves only to private addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether any port of `ip` may be reached: a public address, or one an allow-list entry
/// covers (with or without a port).
fn allowed_any_port(allow: &Allow, ip: IpAddr) -> bool {
    edgejobs_core::outbound::private_reason(ip).is_none() || allow.covers_ip(ip)
}

/// Builds the guarded client.
pub fn client(guard: Arc<Guard>) -> reqwest::Result<reqwest::Client> {
    let hops = Arc::clone(&guard);
    reqwest::Client::builder()
        .user_agent(concat!("edgejobs-consumer/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .dns_resolver(Arc::new(Resolver(guard)))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match check_url(attempt.url().as_str(), &hops.allow) {
                Ok(_) => attempt.follow(),
                Err(e) => {
                    let to = redact_url(attempt.url().as_str());
                    attempt.error(format!("redirect to {to} refused: {e}"))
                }
            }
        }))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &str, fixed: &str) -> Guard {
        Guard { allow: Allow::parse(allow).expect("valid"), fixed: Guard::parse_fixed(fixed).expect("valid") }
    }

    #[tokio::test]
    async fn names_that_resolve_inside_a_private_network_are_refused_before_connecting() {
        let g = guard(
            "127.0.0.1:4000",
            "evil.test=127.0.0.1, meta.test=169.254.169.254, mixed.test=93.184.216.34+10.0.0.1, ok.test=93.184.216.34",
        );
        assert!(g.check("http://evil.test:9090/metrics").await.is_err(), "loopback on a port not allowed");
        assert!(g.check("http://evil.test:4000/hook").await.is_ok(), "the allowed port");
        assert!(g.check("http://meta.test/latest/meta-data").await.is_err());
        assert!(g.check("http://mixed.test/").await.is_err(), "one private address is enough to refuse");
        assert!(g.check("http://ok.test/").await.is_ok());
        assert!(g.check("http://127.0.0.1:9090/").await.is_err(), "literal addresses too");
        let resolved = Resolver(Arc::new(g.clone())).resolve("meta.test".parse().expect("name")).await;
        assert!(resolved.is_err(), "the connect-time filter drops metadata addresses");
        let resolved = Resolver(Arc::new(g)).resolve("mixed.test".parse().expect("name")).await;
        let addrs: Vec<SocketAddr> = resolved.expect("the public one").collect();
        assert_eq!(addrs, vec![SocketAddr::new("93.184.216.34".parse().expect("ip"), 0)]);
    }

    #[test]
    fn fixed_answers_parse_or_name_the_bad_entry() {
        assert!(Guard::parse_fixed("a=1.2.3.4+::1,b=10.0.0.1").is_ok());
        assert!(Guard::parse_fixed("a").is_err());
        assert!(Guard::parse_fixed("a=nope").is_err());
    }
}
