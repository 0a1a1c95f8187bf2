//! Ports as people write them: `443`, `FIRST-LAST` ranges, `PORT/tcp|udp`, comma-separated
//! lists. The proxy's port lists and the datapath's protected ports both parse here.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::RangeInclusive;

use satellite_agent_common as common;

use crate::datapath::Protocol;

/// Parses one port number, 1 to 65535.
///
/// Errors: `port 0 is not a port`, or `"x" is not a port (1-65535)`; callers append an
/// example of what to write.
pub fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) => Err("port 0 is not a port".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("{text:?} is not a port (1-65535)")),
    }
}

/// Parses port items (`443`, `30000-30010`, or several separated by commas) into a sorted list
/// without repeats; a port given twice, port 0, a reversed range or an empty list is an error.
///
/// Errors: a message naming the bad item, with an example.
pub fn port_list(items: &[String]) -> Result<Vec<u16>, String> {
    let example = "write e.g. 10250,443,80,8080 or 30000-32767";
    let parse = |s: &str| port(s).map_err(|e| format!("{e}; {example}"));
    let mut ports = Vec::new();
    for item in items.iter().flat_map(|i| i.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (parse(first)?, parse(last)?);
                if first > last {
                    return Err(format!("range {item} is reversed; write {last}-{first}"));
                }
                ports.extend(first..=last);
            }
            None => ports.push(parse(item)?),
        }
    }
    if ports.is_empty() {
        return Err(format!("no ports; {example}"));
    }
    ports.sort_unstable();
    if let Some(w) = ports.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "port {} is listed twice; list each port once",
            w[0]
        ));
    }
    Ok(ports)
}

/// The datapath's protected ports: single `(protocol, port)` pairs and at most one range
/// (the NodePort range, TCP and UDP). Written as `PORT[/tcp|/udp]` (TCP when no protocol is
/// given) and `FIRST-LAST`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowPorts {
    /// Single (protocol, port) pairs.
    pub ports: BTreeSet<(Protocol, u16)>,
    /// The NodePort range (TCP and UDP), if any.
    pub nodeports: Option<RangeInclusive<u16>>,
}

impl AllowPorts {
    /// Parses `entries`; at most [`common::MAX_PORTS`] single ports.
    ///
    /// Errors: a message naming the bad entry and the accepted forms.
    pub fn parse(entries: &[String]) -> Result<AllowPorts, String> {
        let mut parsed = AllowPorts::default();
        for entry in entries {
            let entry = entry.trim();
            if let Some((first, last)) = entry.split_once('-') {
                let range = port(first)
                    .and_then(|first| Ok(first..=port(last)?))
                    .map_err(|e| format!("{entry:?}: {e}"))?;
                if range.is_empty() {
                    return Err(format!(
                        "{entry:?}: the range is empty (FIRST must be ≤ LAST)"
                    ));
                }
                if parsed.nodeports.replace(range).is_some() {
                    return Err(
                        "only one port range (the NodePort range) is supported; list other \
                         ports one by one"
                            .into(),
                    );
                }
                continue;
            }
            let (number, protocol) = match entry.split_once('/') {
                Some((number, "tcp")) => (number, Protocol::Tcp),
                Some((number, "udp")) => (number, Protocol::Udp),
                Some((_, other)) => {
                    return Err(format!(
                        "{entry:?}: protocol {other:?} is not tcp or udp (write PORT/tcp or \
                         PORT/udp)"
                    ));
                }
                None => (entry, Protocol::Tcp),
            };
            let number = port(number).map_err(|e| format!("{entry:?}: {e}"))?;
            parsed.ports.insert((protocol, number));
        }
        if parsed.ports.len() > common::MAX_PORTS as usize {
            return Err(format!(
                "at most {} single ports, not {}",
                common::MAX_PORTS,
                parsed.ports.len()
            ));
        }
        Ok(parsed)
    }
}

impl AllowPorts {
    /// The entries that parse back into these ports (`10250/tcp`, `30000-32767`), canonical:
    /// single ports first, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut entries: Vec<String> = self.ports.iter().map(|(p, n)| format!("{n}/{p}")).collect();
        if let Some(range) = &self.nodeports {
            entries.push(format!("{}-{}", range.start(), range.end()));
        }
        entries
    }
}

impl fmt::Display for AllowPorts {
    /// `10250/tcp, 30000-32767 (tcp, udp)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list: Vec<String> = self.ports.iter().map(|(p, n)| format!("{n}/{p}")).collect();
        if let Some(range) = &self.nodeports {
            list.push(format!("{}-{} (tcp, udp)", range.start(), range.end()));
        }
        f.write_str(&list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn port_lists() {
        assert_eq!(
            port_list(&strings(&["443,80", "30000-30002"])).unwrap(),
            [80, 443, 30000, 30001, 30002]
        );
        for (bad, needle) in [
            (&["0"][..], "port 0 is not a port"),
            (&["x"], "\"x\" is not a port (1-65535)"),
            (&["9-8"], "range 9-8 is reversed"),
            (&["80,80"], "port 80 is listed twice"),
            (&[""], "no ports"),
        ] {
            let e = port_list(&strings(bad)).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn allow_ports_forms_and_display() {
        let parsed = AllowPorts::parse(&strings(&["10250", "53/udp", "30000-30100"])).unwrap();
        assert_eq!(
            parsed.ports,
            BTreeSet::from([(Protocol::Tcp, 10250), (Protocol::Udp, 53)])
        );
        assert_eq!(parsed.nodeports, Some(30000..=30100));
        assert_eq!(
            parsed.to_string(),
            "10250/tcp, 53/udp, 30000-30100 (tcp, udp)"
        );
        assert_eq!(AllowPorts::parse(&parsed.entries()).unwrap(), parsed);
        for bad in [
            &["0"][..],
            &["1-2", "3-4"],
            &["9-8"],
            &["x/tcp"],
            &["1/sctp"],
        ] {
            assert!(AllowPorts::parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }
}
