//! `srv:` endpoints: the targets of a name's DNS SRV records (RFC 2782), looked up with
//! hickory-resolver through the system's resolver configuration or `dns.nameservers`.
//!
//! Only the records of the lowest priority value are used (the others are the backup the
//! RFC describes; a health-aware fallback is left to `balance`). Each target's addresses come
//! from the answer's additional section when the server sent them, otherwise from an A/AAAA
//! lookup. A target's weight is given to each of its addresses; a weight of 0 gets no share
//! unless every record has 0 (then all share equally). A target of `.` (the service is not
//! offered) is skipped.

use crate::config::DnsConfig;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Looks `name` up (blocking): each target address with its weight.
///
/// # Errors
/// Why the lookup failed, lower case.
pub(crate) fn lookup(name: &str, dns: &DnsConfig) -> Result<Vec<(SocketAddr, u32)>, String> {
    // On a thread of its own with a runtime of its own: callers are synchronous (a config
    // build, perhaps inside a runtime; the control thread's blocking refresh).
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a resolver: {e}"))?;
            rt.block_on(lookup_async(name, dns))
        })
        .join()
        .unwrap_or_else(|_| Err("the resolver panicked".into()))
    })
}

fn resolver(dns: &DnsConfig) -> Result<TokioResolver, String> {
    let mut builder = if dns.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("no system resolver config: {e}"))?
    } else {
        let servers = dns.servers().map_err(|(_, p)| p)?;
        let servers = servers
            .into_iter()
            .map(|sa| {
                let conn = |mut c: ConnectionConfig| {
                    c.port = sa.port();
                    c
                };
                NameServerConfig::new(
                    sa.ip(),
                    true,
                    vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                )
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = Duration::from_millis(dns.timeout_ms);
    opts.attempts = 2;
    builder
        .build()
        .map_err(|e| format!("cannot build a resolver: {e}"))
}

async fn lookup_async(name: &str, dns: &DnsConfig) -> Result<Vec<(SocketAddr, u32)>, String> {
    let resolver = resolver(dns)?;
    // Always absolute: no search domain is tried.
    let fqdn = Name::from_ascii(format!("{name}.")).map_err(|e| format!("\"{name}\": {e}"))?;
    let srv = resolver
        .srv_lookup(fqdn)
        .await
        .map_err(|e| format!("SRV lookup of \"{name}\" failed: {e}"))?;
    let records: Vec<&SRV> = srv
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s),
            _ => None,
        })
        .collect();
    let Some(priority) = records.iter().map(|s| s.priority).min() else {
        return Err(format!("\"{name}\" has no SRV records"));
    };
    let group: Vec<&SRV> = records
        .into_iter()
        .filter(|s| s.priority == priority && !s.target.is_root())
        .collect();
    let all_zero = group.iter().all(|s| s.weight == 0);
    let mut out: Vec<(SocketAddr, u32)> = Vec::new();
    for s in group {
        let weight = if all_zero { 1 } else { u32::from(s.weight) };
        let mut ips: Vec<IpAddr> = srv
            .additionals()
            .iter()
            .filter(|r| r.name == s.target)
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        if ips.is_empty() {
            ips = resolver
                .lookup_ip(s.target.clone())
                .await
                .map_err(|e| format!("SRV target \"{}\" of \"{name}\": {e}", s.target))?
                .iter()
                .collect();
        }
        for ip in ips {
            let addr = SocketAddr::new(ip, s.port);
            match out.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, w)) => *w += weight,
                None => out.push((addr, weight)),
            }
        }
    }
    if out.is_empty() {
        return Err(format!("the SRV records of \"{name}\" name no target"));
    }
    Ok(out)
}
