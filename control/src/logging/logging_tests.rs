use super::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[test]
fn cloudflared_level_names_parse() {
    assert_eq!(parse_level("trace"), Some(LevelFilter::TRACE));
    assert_eq!(parse_level("debug"), Some(LevelFilter::DEBUG));
    assert_eq!(parse_level("INFO"), Some(LevelFilter::INFO));
    assert_eq!(parse_level("warn"), Some(LevelFilter::WARN));
    assert_eq!(parse_level("error"), Some(LevelFilter::ERROR));
    assert_eq!(parse_level("fatal"), Some(LevelFilter::ERROR));
    assert_eq!(parse_level("panic"), Some(LevelFilter::ERROR));
    assert_eq!(parse_level("disabled"), Some(LevelFilter::OFF));
    assert_eq!(parse_level("loud"), None);
}

#[test]
fn an_invalid_level_is_info_with_cloudflareds_error_line() {
    let (level, line) = level_or_info("loud");
    assert_eq!(level, LevelFilter::INFO);
    assert_eq!(
        line.unwrap(),
        r#"Failed to parse log level "loud", using info"#
    );
}

#[test]
fn transport_targets_get_their_own_level_and_ureq_stays_at_warn() {
    let d = filter_directives(LevelFilter::DEBUG, LevelFilter::ERROR, None);
    assert_eq!(
        d,
        "debug,quinn_proto=error,quinn_udp=error,dataplane::quic=error,ureq=warn,ureq_proto=warn"
    );
    let d = filter_directives(LevelFilter::TRACE, LevelFilter::INFO, Some("trace"));
    assert_eq!(d, "trace,ureq=warn,ureq_proto=warn");
    let d = filter_directives(LevelFilter::OFF, LevelFilter::INFO, None);
    assert!(d.ends_with(",ureq=off,ureq_proto=off"), "{d}");
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn json_lines_have_cloudflareds_shape() {
    let buffer = Buffer::default();
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .event_format(json::JsonLines)
        .with_max_level(LevelFilter::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(
            connIndex = 2u64,
            location = "lhr01",
            "Registered tunnel connection"
        );
    });
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(line["level"], "warn");
    assert_eq!(line["message"], "Registered tunnel connection");
    assert_eq!(line["connIndex"], 2);
    assert_eq!(line["location"], "lhr01");
    let time = line["time"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(parsed.offset(), time::UtcOffset::UTC);
}
