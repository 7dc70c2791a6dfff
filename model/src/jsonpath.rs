//! Dotted JSON paths as a scenario writes them (`id`, `result.ref`,
//! `items.0.ts`: a number indexes an array), read the same way by the
//! controller, which checks them against a request template, and by the
//! workers, which follow them in every message.

use serde_json::Value;

/// The steps of `path`; the error says what is wrong with it.
pub fn parse(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("an empty JSON path: name a field, e.g. `id` or `result.ref`".into());
    }
    let steps: Vec<String> = path.split('.').map(str::to_string).collect();
    if steps.iter().any(String::is_empty) {
        return Err(format!("JSON path {path:?} has an empty step: write fields separated by single dots"));
    }
    Ok(steps)
}

/// The value at `steps` in `value`.
pub fn lookup<'v>(value: &'v Value, steps: &[String]) -> Option<&'v Value> {
    steps.iter().try_fold(value, |v, step| match v {
        Value::Object(map) => map.get(step),
        Value::Array(items) => items.get(step.parse::<usize>().ok()?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_step_through_objects_and_arrays() {
        let doc: Value = serde_json::from_str(r#"{"result":{"items":[{"ts":1},{"ts":2}]},"id":7}"#).unwrap();
        assert_eq!(lookup(&doc, &parse("id").unwrap()), Some(&Value::from(7)));
        assert_eq!(lookup(&doc, &parse("result.items.1.ts").unwrap()), Some(&Value::from(2)));
        assert_eq!(lookup(&doc, &parse("result.items.x").unwrap()), None);
        assert_eq!(lookup(&doc, &parse("id.deeper").unwrap()), None);
        assert!(parse("").is_err());
        assert!(parse("a..b").unwrap_err().contains("empty step"));
        assert!(parse(".a").is_err() && parse("a.").is_err());
    }
}
