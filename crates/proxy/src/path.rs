//! Path normalization before routing, as Istio configures Envoy (`meshConfig.pathNormalization`):
//! routing (and, later, authorization) must see `/a/../admin` as the `/admin` it reaches, or a
//! rule on `/admin` is bypassed.
//!
//! - `BASE` (Istio's default; Envoy's `normalize_path`): RFC 3986 section 6.2.2. Percent-encoded
//!   unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other percent-encodings are
//!   kept as sent (`%2f` stays `%2f`, as Envoy keeps it), and dot segments are removed
//!   (5.2.4); `..` never climbs above `/`.
//! - `MERGE_SLASHES`: also `//` to `/` (Envoy's `merge_slashes`).
//! - `DECODE_AND_MERGE_SLASHES`: first `%2F` and `%5C` (any case) become `/` (Envoy's
//!   `UNESCAPE_AND_FORWARD` escaped-slash action; its canonicalizer reads `\` as `/`), then as
//!   `MERGE_SLASHES`.
//! - `NONE`: the path as the client sent it.
//!
//! The query is left alone. The normalized path is what is routed and what goes upstream, as
//! in Envoy. A path that is not `/`-rooted is refused (400); a `%` not followed by two hex
//! digits is kept as it is, as Envoy forwards it (it decodes to nothing a rule could match).

use std::borrow::Cow;

use weft_xds::proto::PathNormalization as Mode;

/// `path_and_query` (`/a/./b?x=1`) normalized by `mode`; borrowed when nothing changes.
pub fn normalize(path_and_query: &str, mode: Mode) -> Result<Cow<'_, str>, &'static str> {
    if mode == Mode::None {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    if path == "*" {
        // OPTIONS * (the server itself): no path to normalize.
        return Ok(Cow::Borrowed(path_and_query));
    }
    if !path.starts_with('/') {
        return Err("the path does not start with /");
    }
    // Most paths have nothing to normalize: no escape, no dot segment, no empty segment.
    let merging = matches!(mode, Mode::MergeSlashes | Mode::DecodeAndMergeSlashes);
    let rebuilt = path.contains('%') || path.contains("/.") || (merging && path.contains("//"));
    if !rebuilt {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let decoded = decode(path, mode == Mode::DecodeAndMergeSlashes);
    let mut segments = remove_dot_segments(&decoded);
    if matches!(mode, Mode::MergeSlashes | Mode::DecodeAndMergeSlashes) {
        segments = merge_slashes(&segments);
    }
    if segments == path {
        return Ok(Cow::Borrowed(path_and_query));
    }
    Ok(Cow::Owned(segments + query))
}

/// Decodes percent-encoded unreserved characters (and `/`, `\` when `slashes`); every other
/// `%` is kept with what follows it.
fn decode(path: &str, slashes: bool) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let value = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        let Some(value) = value else {
            // Not an escape: kept as it came.
            out.push('%');
            i += 1;
            continue;
        };
        let unreserved =
            value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~');
        if unreserved {
            out.push(char::from(value));
        } else if slashes && matches!(value, b'/' | b'\\') {
            // A backslash is a slash to Envoy's canonicalizer (as in browsers' URLs).
            out.push('/');
        } else {
            out.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    out
}

/// RFC 3986 5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    output.push("");
                }
            }
            ".." => {
                output.pop();
                if i == last {
                    output.push("");
                }
            }
            s => output.push(s),
        }
    }
    format!("/{}", output.join("/"))
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str, mode: Mode) -> Result<String, &'static str> {
        normalize(path, mode).map(Cow::into_owned)
    }

    #[test]
    fn base_removes_dot_segments_and_decodes_unreserved() {
        for (input, want) in [
            ("/a/../exact", "/exact"),
            ("/a/./b", "/a/b"),
            ("/../../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/%65xact", "/exact"),
            ("/%2e%2e/admin", "/admin"),
            ("/a%2fb", "/a%2fb"),
            ("/a%zz", "/a%zz"),
            ("/a%2", "/a%2"),
            ("/a/..%", "/a/..%"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%20b", "/a%20b"),
            ("/a//b", "/a//b"),
            ("/q/../x?p=/../y", "/x?p=/../y"),
            ("/", "/"),
            ("*", "*"),
        ] {
            assert_eq!(n(input, Mode::Base).as_deref(), Ok(want), "{input}");
        }
        assert!(matches!(
            normalize("/plain?x=1", Mode::Base),
            Ok(Cow::Borrowed(_))
        ));
        assert!(n("a/b", Mode::Base).is_err());
    }

    #[test]
    fn slashes_are_merged_and_decoded_on_request() {
        assert_eq!(n("//a///b", Mode::MergeSlashes).as_deref(), Ok("/a/b"));
        assert_eq!(n("/a%2Fb", Mode::MergeSlashes).as_deref(), Ok("/a%2Fb"));
        assert_eq!(
            n("/a%2F..%2Fadmin", Mode::DecodeAndMergeSlashes).as_deref(),
            Ok("/admin")
        );
        assert_eq!(
            n("/a%2f%2Fb%5cc", Mode::DecodeAndMergeSlashes).as_deref(),
            Ok("/a/b/c")
        );
        assert_eq!(n("/a/../b//c", Mode::None).as_deref(), Ok("/a/../b//c"));
    }
}
