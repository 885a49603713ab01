//! Canonical JSON: the one text of a JSON value that the ledger hashes (the rules are in the
//! storage contract of [`crate::ledger::events`]). Our own writer, never serde_json's, whose
//! map order and float format are not ours to pin.

use serde_json::Value;

/// The canonical JSON text of a value (the storage contract of [`crate::ledger::events`]).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_canonical(out, v);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    use std::fmt::Write as _;
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // 2^63 and 2^64 are exact in f64; every integral f64 in between is an exact integer.
        // -0.0 >= 0.0, so it is written as 0.
        const I64_MIN: f64 = -9_223_372_036_854_775_808.0;
        const U64_END: f64 = 18_446_744_073_709_551_616.0;
        if f.fract() == 0.0 && (I64_MIN..0.0).contains(&f) {
            let _ = write!(out, "{}", f as i64);
        } else if f.fract() == 0.0 && (0.0..U64_END).contains(&f) {
            let _ = write!(out, "{}", f as u64);
        } else {
            // Our own format, not serde_json's (which has changed between versions): the
            // shortest digits that read back as f, in exponent form (std's `{:e}`).
            let _ = write!(out, "{f:e}");
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[3,{"y":true,"x":null}],"m":"é"},"A":2}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"A":2,"a":{"m":"é","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_escapes_only_quote_backslash_and_controls() {
        let v = json!({"s": "q\"b\\n\nt\t\u{1}/€😀"});
        assert_eq!(
            canonical_json(&v),
            "{\"s\":\"q\\\"b\\\\n\\u000at\\u0009\\u0001/€😀\"}"
        );
    }

    #[test]
    fn canonical_json_numbers_depend_on_the_value_not_the_form() {
        let same = |a: &str, b: &str| {
            let a: Value = serde_json::from_str(a).unwrap();
            let b: Value = serde_json::from_str(b).unwrap();
            assert_eq!(canonical_json(&a), canonical_json(&b));
            canonical_json(&a)
        };
        assert_eq!(same("1e18", "1000000000000000000"), "1000000000000000000");
        assert_eq!(same("5.0", "5"), "5");
        assert_eq!(same("-0.0", "0"), "0");
        assert_eq!(same("-3.0", "-3"), "-3");
        assert_eq!(
            same("18446744073709551615", "18446744073709551615"),
            "18446744073709551615"
        );
        assert_eq!(
            same("-9223372036854775808", "-9.223372036854775808e18"),
            "-9223372036854775808"
        );
        assert_eq!(same("0.1", "0.10"), "1e-1");
        assert_eq!(same("1e-7", "0.0000001"), "1e-7");
        assert_eq!(same("1e20", "100000000000000000000"), "1e20");
        assert_eq!(same("-2.5", "-2.50"), "-2.5e0");
        assert_eq!(same("123.456", "1.23456e2"), "1.23456e2");
        assert_eq!(
            same("1.7976931348623157e308", "1.7976931348623157E+308"),
            "1.7976931348623157e308"
        );
    }
}
