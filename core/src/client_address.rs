//! Who is on the other end of a request: the peer's address, or, when the
//! peer is a proxy the operator trusts (`KIHON4_TRUSTED_PROXIES`), the
//! address that proxy reports in `X-Forwarded-For` or `Forwarded`
//! (`KIHON4_TRUSTED_PROXY_HEADER`).
//!
//! The header is read from the right: each hop appends the address it was
//! reached from, so the rightmost entries are written by the operator's own
//! proxies and the leftmost by whoever sent the request. The client is the
//! rightmost address that is not a trusted proxy; every entry left of it
//! could have been written by the client and is ignored. A request from a
//! peer that is not trusted is judged by its peer address alone, whatever
//! its headers say.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// Which header a trusted proxy reports the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the de-facto standard).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ProxyHeader {
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

impl FromStr for ProxyHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            other => Err(format!(
                "must be `x-forwarded-for` or `forwarded`, not `{other}`"
            )),
        }
    }
}

/// The proxies whose reports are believed, and the header they write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    pub networks: Vec<IpNet>,
    pub header: ProxyHeader,
}

impl TrustedProxies {
    /// Parses one entry of `KIHON4_TRUSTED_PROXIES`: an address or a CIDR.
    pub fn parse_network(s: &str) -> Result<IpNet, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(net.trunc());
        }
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`{s}` is neither an address nor a CIDR such as 10.0.0.0/8"))
    }

    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.networks.iter().any(|n| n.contains(&address))
    }

    /// The client of a request from `peer` whose header `self.header`
    /// carried `values` (every occurrence, in order).
    pub fn client<'a>(&self, peer: IpAddr, values: impl IntoIterator<Item = &'a str>) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let hops: Vec<&str> = values
            .into_iter()
            .flat_map(|v| split_outside_quotes(v, ','))
            .collect();
        for hop in hops.iter().rev() {
            let reported = match self.header {
                ProxyHeader::XForwardedFor => parse_hop(hop.trim()),
                ProxyHeader::Forwarded => forwarded_for(hop).and_then(parse_hop),
            };
            // A hop that names no address ("unknown", an obfuscated name,
            // garbage) ends what can be believed: the trusted proxy that
            // wrote it stands for the client.
            let Some(reported) = reported else {
                return client;
            };
            client = canonical(reported);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The key a client's requests are counted under: its IPv4 address, or the
/// /64 network of its IPv6 address (one subscriber's usual allocation, so a
/// client cannot escape a limit by taking another address of its own).
pub fn source_key(address: IpAddr) -> String {
    match canonical(address) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return ip.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The `for` parameter of one `Forwarded` element (`for=…;proto=…;by=…`).
fn forwarded_for(element: &str) -> Option<&str> {
    split_outside_quotes(element, ';')
        .into_iter()
        .find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("for")
                .then(|| value.trim())
        })
}

/// Splits on `sep` outside double quotes (RFC 7239 quotes IPv6 hops).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(header: ProxyHeader, nets: &[&str]) -> TrustedProxies {
        TrustedProxies {
            networks: nets
                .iter()
                .map(|n| TrustedProxies::parse_network(n).unwrap())
                .collect(),
            header,
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let p = proxies(ProxyHeader::XForwardedFor, &["10.0.0.0/8"]);
        assert_eq!(
            p.client(ip("203.0.113.9"), ["198.51.100.1"]),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.0.0.1"), ["198.51.100.1"]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(ProxyHeader::XForwardedFor, &["10.0.0.0/8", "192.0.2.7"]);
        // The client forged the first entry; the proxies appended the rest.
        assert_eq!(
            p.client(ip("10.0.0.1"), ["1.1.1.1, 203.0.113.9, 192.0.2.7"]),
            ip("203.0.113.9")
        );
        // Several header lines are one list.
        assert_eq!(
            p.client(ip("10.0.0.1"), ["1.1.1.1", "203.0.113.9", "10.2.3.4"]),
            ip("203.0.113.9")
        );
        // Every hop trusted: the leftmost is the client.
        assert_eq!(
            p.client(ip("10.0.0.1"), ["10.9.9.9, 10.0.0.2"]),
            ip("10.9.9.9")
        );
        // No header: the proxy itself.
        assert_eq!(p.client(ip("10.0.0.1"), []), ip("10.0.0.1"));
        // Garbage ends the trust at the proxy that passed it on.
        assert_eq!(
            p.client(ip("10.0.0.1"), ["1.1.1.1, nonsense, 10.0.0.3"]),
            ip("10.0.0.3")
        );
        assert_eq!(
            p.client(ip("10.0.0.1"), ["203.0.113.9:4711"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client(ip("::ffff:10.0.0.1"), ["203.0.113.9"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_is_read_as_rfc_7239_says() {
        let p = proxies(ProxyHeader::Forwarded, &["10.0.0.0/8"]);
        assert_eq!(
            p.client(
                ip("10.0.0.1"),
                [r#"for=1.1.1.1, for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1"#]
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            p.client(
                ip("10.0.0.1"),
                ["for=192.0.2.60;proto=http;by=203.0.113.43"]
            ),
            ip("192.0.2.60")
        );
        assert_eq!(p.client(ip("10.0.0.1"), ["for=unknown"]), ip("10.0.0.1"));
        assert_eq!(
            p.client(ip("10.0.0.1"), ["for=_hidden, for=10.0.0.5"]),
            ip("10.0.0.5")
        );
        // The other header is not read.
        let xff = proxies(ProxyHeader::XForwardedFor, &["10.0.0.0/8"]);
        assert_eq!(
            xff.client(ip("10.0.0.1"), ["for=192.0.2.60"]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_network() {
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(source_key(ip("192.0.2.1")), "192.0.2.1");
    }

    #[test]
    fn networks_are_addresses_or_cidrs() {
        assert_eq!(
            TrustedProxies::parse_network("10.1.2.3/8")
                .unwrap()
                .to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            TrustedProxies::parse_network("::1").unwrap().to_string(),
            "::1/128"
        );
        assert!(TrustedProxies::parse_network("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse_network("proxy.local").is_err());
    }
}
