//! Renderings cloudflared users' scripts parse: `-o json` (2-space indent), `-o yaml` (keys are
//! cloudflared's lowercased Go field names, i.e. the JSON names without underscores) and the
//! tab-aligned tables of `list` and `info`.

use serde_json::{Map, Value};

use super::args::OutputFormat;

pub fn render(format: OutputFormat, v: &Value) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(v)?),
        OutputFormat::Yaml => serde_yaml::to_string(&yaml_keys(v))?,
    })
}

/// cloudflared marshals YAML from Go structs without yaml tags, so `created_at` becomes
/// `createdat`, `conns` becomes `connections`, and so on.
fn yaml_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, val) in m {
                let key = match k.as_str() {
                    "conns" => "connections".to_string(),
                    other => other.replace('_', "").to_ascii_lowercase(),
                };
                out.insert(key, yaml_keys(val));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(yaml_keys).collect()),
        other => other.clone(),
    }
}

/// Go's text/tabwriter with padding 1 and every cell tab-terminated: each column is as wide as
/// its widest cell plus one space, the last column included.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            out.push_str(&" ".repeat(width[i] - c.chars().count() + 1));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_pads_every_column() {
        let t = table(&[
            vec!["ID".into(), "NAME".into()],
            vec!["abc".into(), "x".into()],
        ]);
        assert_eq!(t, "ID  NAME \nabc x    \n");
    }

    #[test]
    fn yaml_uses_go_field_names() {
        let v = json!({"created_at": "t", "conns": [{"colo_name": "lab", "is_pending_reconnect": false}]});
        let y = render(OutputFormat::Yaml, &v).unwrap();
        assert!(y.contains("createdat: t"), "{y}");
        assert!(y.contains("connections:"), "{y}");
        assert!(y.contains("coloname: lab"), "{y}");
        assert!(y.contains("ispendingreconnect: false"), "{y}");
    }

    #[test]
    fn json_is_indented_with_trailing_newline() {
        let s = render(OutputFormat::Json, &json!({"a": 1})).unwrap();
        assert_eq!(s, "{\n  \"a\": 1\n}\n");
    }
}
