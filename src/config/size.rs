//! Byte sizes in configuration: `67108864`, `"64M"`, `"1.5G"`, `"512KiB"`, `"max"`.

/// Parse a size. Suffixes K, M, G, T (optionally followed by `i`, `iB` or
/// `B`) are powers of 1024. `"max"` means no limit and yields `None`.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size \"{s}\": expected a number, e.g. \"64M\""
        ));
    }
    let unit_norm = unit.trim();
    let base = unit_norm
        .strip_suffix("iB")
        .or_else(|| unit_norm.strip_suffix('i'))
        .or_else(|| unit_norm.strip_suffix('B'))
        .unwrap_or(unit_norm);
    let mult: u64 = match base.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size \"{s}\": unknown unit \"{unit_norm}\" (expected K, M, G or T)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size \"{s}\": \"{num}\" is not a number"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("invalid size \"{s}\": too large"));
    }
    if mult == 1 && num.contains('.') {
        return Err(format!("invalid size \"{s}\": a byte count must be whole"));
    }
    Ok(Some(bytes as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(Some(1024)));
        assert_eq!(parse_size("64M"), Ok(Some(64 << 20)));
        assert_eq!(parse_size("64MiB"), Ok(Some(64 << 20)));
        assert_eq!(parse_size("2Gi"), Ok(Some(2 << 30)));
        assert_eq!(parse_size("512k"), Ok(Some(512 << 10)));
        assert_eq!(parse_size("1.5G"), Ok(Some(3 << 29)));
        assert_eq!(parse_size("max"), Ok(None));
    }

    #[test]
    fn bad_sizes() {
        let e = parse_size("64Q").unwrap_err();
        assert_eq!(
            e,
            "invalid size \"64Q\": unknown unit \"Q\" (expected K, M, G or T)"
        );
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("1.2.3M").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
