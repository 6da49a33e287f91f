//! Query-string validation shared by the floor server's routes: the contract answers 400
//! to any `n`, `bytes` or `size` that is not a positive integer.

/// The value of `name` in `query` (`a=1&b=2`, no leading `?`) if it is a positive decimal
/// integer no larger than `max`; `None` if missing, repeated, malformed, zero or too large.
pub fn positive(query: &str, name: &str, max: u64) -> Option<u64> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != name {
            continue;
        }
        if found.is_some() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        found = Some(v.parse::<u64>().ok().filter(|&n| n > 0 && n <= max)?);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::positive;

    #[test]
    fn accepts_only_positive_integers_in_range() {
        assert_eq!(positive("n=100", "n", 1000), Some(100));
        assert_eq!(positive("bytes=5&size=2", "size", 10), Some(2));
        for bad in [
            "",
            "n=",
            "n=0",
            "n=-1",
            "n=1.5",
            "n=abc",
            "n=+3",
            "n=1001",
            "n=1&n=2",
            "m=3",
            "n=99999999999999999999999",
        ] {
            assert_eq!(positive(bad, "n", 1000), None, "{bad:?}");
        }
    }
}
