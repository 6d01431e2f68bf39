//! "Did you mean ...?" for misspelt field names and enum values.

/// The candidate closest to `input`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            // Case-insensitive equality is the most common slip (`Weight`, `uri_regex`).
            let score = if c.eq_ignore_ascii_case(input)
                || c.to_ascii_lowercase() == lower.replace(['_', '-'], "")
            {
                1.0
            } else {
                strsim::jaro_winkler(&lower, &c.to_ascii_lowercase())
            };
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names() {
        let fields = ["destination", "weight", "headers"];
        assert_eq!(did_you_mean("weigth", fields), Some("weight"));
        assert_eq!(did_you_mean("Weight", fields), Some("weight"));
        assert_eq!(did_you_mean("destinaton", fields), Some("destination"));
        assert_eq!(did_you_mean("zzz", fields), None);
        assert_eq!(
            did_you_mean("per_try_timeout", ["perTryTimeout", "attempts"]),
            Some("perTryTimeout")
        );
    }
}
