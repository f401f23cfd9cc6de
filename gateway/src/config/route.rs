//! A route's match conditions (`headers`, `query`) and weighted split (`clusters`): plain
//! data and their validation. The route itself is [`RouteConfig`](super::RouteConfig); how
//! they match, and in which order routes are tried, is `route.rs`.

use super::error::ConfigError;
use serde::{Deserialize, Serialize};

/// Most header plus query conditions on one route.
pub const MAX_CONDITIONS: usize = 32;
/// Most clusters in one route's split.
pub const MAX_SPLIT: usize = 16;
/// Largest weight of one cluster in a split.
pub const MAX_WEIGHT: u32 = 10_000;

/// `[[routes.headers]]`: the request must (or, with `invert`, must not) carry a field.
/// Exactly one of `value`, `prefix` and `present = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Field name, case-insensitive. Required.
    pub name: String,
    /// Some field line of that name has exactly this value (case-sensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Some field line of that name starts with this (case-sensitive, not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `true`: some field of that name is present, whatever its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Negates the condition (`present = true, invert = true`: no such field). Default
    /// `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

/// `[[routes.query]]`: the query string must carry a parameter, compared percent-decoded
/// (`+` is a space). Exactly one of `value` and `present = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryMatch {
    /// Parameter name, case-sensitive, decoded. Required, not empty.
    pub name: String,
    /// Some parameter of that name has exactly this (decoded) value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `true`: some parameter of that name is present, whatever its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// One branch of `routes.clusters`: a cluster and its share of the route's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    /// Cluster name. Required.
    pub cluster: String,
    /// Relative share, 1 to 10000 (the branch gets `weight / sum of weights` of the
    /// requests). Required.
    pub weight: u32,
}

/// `routes.sticky`: keeps a client on one cluster of a split, by a key it sends. Exactly one
/// of `header` and `cookie`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyKey {
    /// The key is the first value of this header field (case-insensitive name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The key is the value of this cookie (case-sensitive name) in the `Cookie` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

impl StickyKey {
    /// Checks the key; `at` is its path (`routes[2].sticky`).
    ///
    /// # Errors
    /// The field at fault.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        match (&self.header, &self.cookie) {
            (Some(h), None) if http::HeaderName::from_bytes(h.as_bytes()).is_err() => Err(
                ConfigError::new(format!("{at}.header"), "is not a header field name"),
            ),
            (None, Some(c))
                if c.is_empty()
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b)) =>
            {
                Err(ConfigError::new(
                    format!("{at}.cookie"),
                    "is not a cookie name (visible ASCII without = ; , or \")",
                ))
            }
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(ConfigError::new(
                at,
                "needs exactly one of `header` and `cookie`",
            )),
        }
    }
}

impl HeaderMatch {
    /// Checks the condition; `at` is its path (`routes[2].headers[0]`).
    ///
    /// # Errors
    /// The first field at fault.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| ConfigError::new(format!("{at}.{f}"), p);
        if http::HeaderName::from_bytes(self.name.as_bytes()).is_err() {
            return Err(e("name", "is not a header field name"));
        }
        let set = [
            self.value.is_some(),
            self.prefix.is_some(),
            self.present.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => {
                return Err(ConfigError::new(
                    at,
                    "needs one of `value`, `prefix` or `present = true`",
                ));
            }
            1 => {}
            _ => {
                return Err(ConfigError::new(
                    at,
                    "takes only one of `value`, `prefix` and `present`",
                ));
            }
        }
        if self.present == Some(false) {
            return Err(e(
                "present",
                "must be true (for a field that must be absent, write present = true and \
                 invert = true)",
            ));
        }
        if self.prefix.as_deref() == Some("") {
            return Err(e(
                "prefix",
                "must not be empty (write present = true to match any value)",
            ));
        }
        for (f, v) in [("value", &self.value), ("prefix", &self.prefix)] {
            if let Some(v) = v
                && http::HeaderValue::from_str(v).is_err()
            {
                return Err(e(
                    f,
                    "holds a byte a header value cannot hold here (a control byte or non-ASCII)",
                ));
            }
        }
        Ok(())
    }

    /// The condition in a route's key: `name=value`, `name^=prefix` or `name`, after a `!`
    /// when inverted.
    pub(crate) fn describe(&self) -> String {
        let not = if self.invert { "!" } else { "" };
        let name = self.name.to_ascii_lowercase();
        match (&self.value, &self.prefix) {
            (Some(v), _) => format!("{not}{name}={v}"),
            (None, Some(p)) => format!("{not}{name}^={p}"),
            (None, None) => format!("{not}{name}"),
        }
    }
}

impl QueryMatch {
    /// Checks the condition; `at` is its path (`routes[2].query[0]`).
    ///
    /// # Errors
    /// The first field at fault.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
        }
        match (&self.value, self.present) {
            (None, None) => Err(ConfigError::new(
                at,
                "needs one of `value` or `present = true`",
            )),
            (Some(_), Some(_)) => Err(ConfigError::new(
                at,
                "takes only one of `value` and `present`",
            )),
            (None, Some(false)) => Err(ConfigError::new(
                format!("{at}.present"),
                "must be true (an absent parameter cannot be asked for)",
            )),
            _ => Ok(()),
        }
    }

    /// The condition in a route's key: `?name=value` or `?name`.
    pub(crate) fn describe(&self) -> String {
        match &self.value {
            Some(v) => format!("?{}={v}", self.name),
            None => format!("?{}", self.name),
        }
    }
}

/// Checks a route's split; `at` is the route's path (`routes[2]`), `known` says whether a
/// cluster name exists.
///
/// # Errors
/// The first field at fault.
pub(crate) fn validate_split(
    split: &[WeightedCluster],
    at: &str,
    known: impl Fn(&str) -> bool,
) -> Result<(), ConfigError> {
    if split.len() > MAX_SPLIT {
        return Err(ConfigError::new(
            format!("{at}.clusters"),
            format!("at most {MAX_SPLIT} clusters"),
        ));
    }
    for (j, w) in split.iter().enumerate() {
        let f = |f: &str| format!("{at}.clusters[{j}].{f}");
        if !known(&w.cluster) {
            return Err(ConfigError::new(
                f("cluster"),
                format!("names unknown cluster \"{}\"", w.cluster),
            ));
        }
        if split[..j].iter().any(|o| o.cluster == w.cluster) {
            return Err(ConfigError::new(
                f("cluster"),
                format!("names cluster \"{}\" a second time", w.cluster),
            ));
        }
        if !(1..=MAX_WEIGHT).contains(&w.weight) {
            return Err(ConfigError::new(
                f("weight"),
                format!("must be between 1 and {MAX_WEIGHT}"),
            ));
        }
    }
    Ok(())
}

impl super::RouteConfig {
    /// The route's clusters with their weights: its `cluster` (weight 1), or its split.
    pub fn branches(&self) -> impl Iterator<Item = (&str, u32)> {
        self.cluster
            .as_deref()
            .map(|c| (c, 1))
            .into_iter()
            .chain(self.clusters.iter().map(|w| (w.cluster.as_str(), w.weight)))
    }

    /// `HOST PREFIX [METHODS] [CONDITIONS]`: names the route in `/state` and metric labels,
    /// and finds its caches, batchers and counters again after a reload.
    pub(crate) fn key(&self) -> String {
        let mut key = format!("{} {}", self.host, self.path_prefix);
        if !self.methods.is_empty() {
            key.push(' ');
            key.push_str(&self.methods.join(","));
        }
        for h in &self.headers {
            key.push(' ');
            key.push_str(&h.describe());
        }
        for q in &self.query {
            key.push(' ');
            key.push_str(&q.describe());
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    const BASE: &str = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                        [[clusters]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n\
                        [[clusters]]\nname = \"b\"\nendpoints = [\"127.0.0.1:2\"]\n\
                        [[routes]]\ncluster = \"a\"\n";

    fn refused(route: &str) -> (String, String) {
        let text = format!("{BASE}[[routes]]\n{route}");
        let err = Config::parse(&text, "r.toml").expect_err(route);
        assert!(
            err.to_string()
                .starts_with(&format!("r.toml: {}: ", err.field)),
            "{err}"
        );
        (err.field, err.problem)
    }

    #[test]
    fn good_conditions_and_splits_parse() {
        let text = format!(
            "{BASE}[[routes]]\npath_prefix = \"/x\"\n\
             clusters = [{{ cluster = \"a\", weight = 95 }}, {{ cluster = \"b\", weight = 5 }}]\n\
             [[routes.headers]]\nname = \"X-Canary\"\nvalue = \"1\"\n\
             [[routes.headers]]\nname = \"user-agent\"\nprefix = \"curl/\"\n\
             [[routes.headers]]\nname = \"cookie\"\npresent = true\ninvert = true\n\
             [[routes.query]]\nname = \"v\"\nvalue = \"2\"\n\
             [[routes.query]]\nname = \"debug\"\npresent = true\n\
             [[routes]]\npath_prefix = \"/y\"\nsticky = {{ cookie = \"session\" }}\n\
             clusters = [{{ cluster = \"a\", weight = 1 }}, {{ cluster = \"b\", weight = 1 }}]\n"
        );
        let c = Config::parse(&text, "r.toml").unwrap();
        let r = &c.routes[1];
        assert_eq!(r.branches().collect::<Vec<_>>(), [("a", 95), ("b", 5)]);
        assert_eq!(
            r.key(),
            "* /x x-canary=1 user-agent^=curl/ !cookie ?v=2 ?debug"
        );
        assert_eq!(c.routes[0].key(), "* /");
        // What `/config` serves parses back to the same config.
        let again = toml::to_string(&c).unwrap();
        assert_eq!(Config::parse(&again, "again.toml").unwrap(), c);
    }

    #[test]
    fn bad_conditions_are_refused_naming_the_field() {
        let cases = [
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"bad name\"\nvalue = \"1\"\n",
                "routes[1].headers[0].name",
                "not a header field name",
            ),
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"x\"\n",
                "routes[1].headers[0]",
                "needs one of",
            ),
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"x\"\nvalue = \"1\"\nprefix = \"1\"\n",
                "routes[1].headers[0]",
                "only one of",
            ),
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"x\"\npresent = false\n",
                "routes[1].headers[0].present",
                "must be true",
            ),
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"x\"\nprefix = \"\"\n",
                "routes[1].headers[0].prefix",
                "must not be empty",
            ),
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"x\"\nvalue = \"a\\nb\"\n",
                "routes[1].headers[0].value",
                "control byte",
            ),
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"x\"\nvalue = 1\n",
                "routes[1].headers[0].value",
                "invalid type",
            ),
            (
                "cluster = \"a\"\n[[routes.headers]]\nname = \"x\"\nvalu = \"1\"\n",
                "routes[1].headers[0].valu",
                "unknown field",
            ),
            (
                "cluster = \"a\"\n[[routes.query]]\nname = \"\"\npresent = true\n",
                "routes[1].query[0].name",
                "must not be empty",
            ),
            (
                "cluster = \"a\"\n[[routes.query]]\nname = \"q\"\nvalue = \"1\"\npresent = true\n",
                "routes[1].query[0]",
                "only one of",
            ),
            (
                "cluster = \"a\"\n[[routes.query]]\nname = \"q\"\nprefix = \"1\"\n",
                "routes[1].query[0].prefix",
                "unknown field",
            ),
            (
                "cluster = \"a\"\n[[routes.query]]\nname = \"q\"\npresent = false\n",
                "routes[1].query[0].present",
                "must be true",
            ),
        ];
        for (route, field, problem) in cases {
            let (f, p) = refused(route);
            assert_eq!(f, field, "{route}: {p}");
            assert!(p.contains(problem), "{route}: {f}: {p}");
        }
        let many = "[[routes.headers]]\nname = \"x\"\npresent = true\n".repeat(33);
        let (f, p) = refused(&format!("cluster = \"a\"\n{many}"));
        assert_eq!(f, "routes[1].headers", "{p}");
    }

    #[test]
    fn bad_splits_are_refused_naming_the_field() {
        let split = |entries: &str| format!("path_prefix = \"/s\"\nclusters = [{entries}]\n");
        let cases = [
            (
                "path_prefix = \"/s\"\n".to_owned(),
                "routes[1].cluster",
                "needs `cluster`",
            ),
            (
                format!(
                    "cluster = \"a\"\n{}",
                    split("{ cluster = \"b\", weight = 1 }")
                ),
                "routes[1].clusters",
                "not both",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }, { cluster = \"c\", weight = 1 }"),
                "routes[1].clusters[1].cluster",
                "unknown cluster \"c\"",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }, { cluster = \"a\", weight = 1 }"),
                "routes[1].clusters[1].cluster",
                "a second time",
            ),
            (
                split("{ cluster = \"a\", weight = 0 }"),
                "routes[1].clusters[0].weight",
                "between 1 and 10000",
            ),
            (
                split("{ cluster = \"a\", weight = 10001 }"),
                "routes[1].clusters[0].weight",
                "between 1 and 10000",
            ),
            (
                split("{ cluster = \"a\", weight = -1 }"),
                "routes[1].clusters[0].weight",
                "invalid value",
            ),
            (
                split("{ cluster = \"a\" }"),
                "routes[1].clusters[0]",
                "missing field `weight`",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }")
                    + "kind = \"batch\"\n[routes.batch]\nupstream_path = \"/\"\n",
                "routes[1].clusters",
                "one cluster",
            ),
            (
                "cluster = \"nope\"\n".to_owned(),
                "routes[1].cluster",
                "unknown cluster \"nope\"",
            ),
        ];
        for (route, field, problem) in cases {
            let (f, p) = refused(&route);
            assert_eq!(f, field, "{route}: {p}");
            assert!(p.contains(problem), "{route}: {f}: {p}");
        }
        let sticky_cases = [
            (
                "cluster = \"a\"\nsticky = { header = \"x-user\" }\n".to_owned(),
                "routes[1].sticky",
                "weighted split",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }") + "sticky = {}\n",
                "routes[1].sticky",
                "exactly one of",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }")
                    + "sticky = { header = \"x\", cookie = \"y\" }\n",
                "routes[1].sticky",
                "exactly one of",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }") + "sticky = { header = \"a b\" }\n",
                "routes[1].sticky.header",
                "not a header field name",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }") + "sticky = { cookie = \"a=b\" }\n",
                "routes[1].sticky.cookie",
                "not a cookie name",
            ),
            (
                split("{ cluster = \"a\", weight = 1 }")
                    + "sticky = { header = \"X-Request-Id\" }\n",
                "routes[1].sticky.header",
                "sets itself",
            ),
        ];
        for (route, field, problem) in sticky_cases {
            let (f, p) = refused(&route);
            assert_eq!(f, field, "{route}: {p}");
            assert!(p.contains(problem), "{route}: {f}: {p}");
        }
        let seventeen = vec!["{ cluster = \"a\", weight = 1 }"; 17].join(", ");
        let (f, _) = refused(&split(&seventeen));
        assert_eq!(f, "routes[1].clusters");
    }
}
