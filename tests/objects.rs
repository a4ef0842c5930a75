//! Files inside flows: `yaraflow pcap` on `data/pcap/objects-loopback.pcapng`
//! (HTTP downloads plain, chunked, gzip, pipelined after a HEAD; SMTP
//! messages with base64 attachments; a gzip bomb, a malformed chunk, a body
//! longer than its flow, a MIME part that never ends; see
//! `data/pcap/objects.sh`), checked against an independent path: the
//! objects tshark exports (`--export-objects http,imf`), scanned whole by
//! YARA-X with every rule, whole-data rules included.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{json_lines, printed_all, reference_all_with, run_yaraflow, tshark_installed};
use yaraflow::RuleSet;

const CAPTURE: &str = "data/pcap/objects-loopback.pcapng";

/// The bundled rules and whole-data rules that read what only a file has:
/// its header, its size, its PE structure.
const FILE_RULES: &str = r#"
import "pe"
rule pe_with_one_section { condition: uint16(0) == 0x5A4D and pe.number_of_sections == 1 }
rule tiny_pe_text { strings: $t = "yaraflow tiny pe" condition: pe.is_pe and $t }
rule small_file { condition: filesize < 100 }
rule eicar_whole { strings: $e = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR" condition: $e at 0 and filesize < 200 }
rule exe_by_extension { condition: extension == ".exe" and uint16(0) == 0x5A4D }
rule eicar_by_name { strings: $e = "EICAR" condition: $e and filename == "eicar.com" }
rule fetched_from_plain { condition: filepath startswith "/plain/" }
rule typed_octets { condition: filetype == "application/octet-stream" }
"#;

/// The rules of [`FILE_RULES`] that read the file externals: each must
/// match some object.
const EXTERNAL_RULES: [&str; 4] = [
    "exe_by_extension",
    "eicar_by_name",
    "fetched_from_plain",
    "typed_octets",
];

/// The file externals of an object as printed: its name, its request
/// path, its content type.
fn printed_externals(line: &serde_json::Value) -> Vec<yaraflow::External> {
    let text = |key: &str| line["object"][key].as_str().map(str::to_string);
    let info = yaraflow::FileInfo {
        name: text("file_name"),
        path: text("uri").map(|uri| uri.split('?').next().unwrap().to_string()),
        content_type: text("content_type"),
    };
    info.externals()
}

/// Writes the rules to a folder (the bundled ones beside them) and
/// compiles the same set for the reference.
fn rules(dir: &Path) -> RuleSet {
    let mut sources = String::new();
    for entry in std::fs::read_dir("data/rules").unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        sources += &std::fs::read_to_string(&path).unwrap();
    }
    std::fs::write(dir.join("files.yar"), FILE_RULES).unwrap();
    let imports = "import \"pe\"\n";
    let all = format!(
        "{imports}{}{}",
        sources,
        FILE_RULES.replace(imports.trim(), "")
    );
    RuleSet::from_source(&all, yaraflow::ScannerConfig::default().max_pattern_len).unwrap()
}

fn pcap(rules_dir: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let rules = rules_dir.to_str().unwrap();
    let mut args = vec!["pcap", "--quiet", "--rules", rules];
    args.extend_from_slice(extra);
    args.push(CAPTURE);
    let out = run_yaraflow(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out)
}

/// The objects of the lines, by protocol.
fn objects<'a>(lines: &'a [serde_json::Value], protocol: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["object"]["protocol"] == protocol)
        .collect()
}

/// tshark's exported objects of one protocol, as their contents.
fn tshark_export(protocol: &str, dir: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("tshark")
        .args([
            "-r",
            CAPTURE,
            "-q",
            "-d",
            "tcp.port==18125,smtp",
            "--export-objects",
        ])
        .arg(format!("{protocol},{}", dir.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    files.sort();
    files
}

/// Each of tshark's files has an object of ours with the same size and
/// the verdict of the file scanned whole (tshark exports a body that
/// broke off at a malformed chunk too: ours is the same bytes, marked
/// cut); returns the indexes in
/// `ours` of the objects that matched a file.
fn match_files(rules: &RuleSet, files: &[Vec<u8>], ours: &[&serde_json::Value]) -> Vec<usize> {
    let mut used = Vec::new();
    for file in files {
        let found = (0..ours.len()).filter(|&i| {
            let expected = reference_all_with(rules, &printed_externals(ours[i]), file);
            ours[i]["object"]["size"] == file.len() && printed_all(ours[i]) == expected
        });
        let found: Vec<usize> = found.collect();
        assert!(
            !found.is_empty(),
            "no object of ours is tshark's {} byte file",
            file.len()
        );
        used.extend(found);
    }
    used
}

#[test]
fn http_objects_match_tsharks_export_scanned_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(dir.path());
    let lines = pcap(dir.path(), &[]);
    let http = objects(&lines, "http");
    // Which rules matched which objects: the whole-data rules must have
    // had something to decide.
    let mut matched: BTreeMap<String, usize> = BTreeMap::new();
    for line in &http {
        for rule in line["rules"].as_array().unwrap() {
            *matched
                .entry(rule["identifier"].as_str().unwrap().into())
                .or_default() += 1;
        }
    }
    let file_rules = [
        "pe_with_one_section",
        "tiny_pe_text",
        "small_file",
        "eicar_whole",
    ];
    for rule in file_rules.into_iter().chain(EXTERNAL_RULES) {
        assert!(
            matched.get(rule).is_some_and(|&n| n > 0),
            "{rule} never matched: {matched:?}"
        );
    }
    if !tshark_installed("the objects are not compared with tshark's") {
        return;
    }
    let export = tempfile::tempdir().unwrap();
    let mut files = tshark_export("http", export.path());
    // tshark (4.0) frames the response pipelined after a HEAD response as
    // that HEAD response's body (its `Content-Length` bytes, status line
    // included), and so misses the file that response carried: that
    // "file" is left out. The file it missed is also served as
    // /attachment, which tshark does export.
    let before = files.len();
    files.retain(|f| !f.starts_with(b"HTTP/1."));
    assert!(before - files.len() <= 1);
    assert!(files.len() >= 5, "tshark exported {} files", files.len());
    let used = match_files(&rules, &files, &http);
    // Every object of ours is a file tshark exported, but those cut: the
    // body longer than its flow, the malformed chunked one.
    for (i, object) in http.iter().enumerate() {
        if object["object"]["cut"].is_null() {
            assert!(used.contains(&i), "tshark has no file like {object}");
        }
    }
    let cut = http
        .iter()
        .filter(|o| !o["object"]["cut"].is_null())
        .count();
    assert_eq!(cut, 2);
}

#[test]
fn smtp_attachments_match_the_messages_tshark_exports() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules(dir.path());
    let lines = pcap(dir.path(), &[]);
    let mut smtp = objects(&lines, "smtp");
    // Connections are printed in no fixed order (flow threads): the
    // complete message's parts by index, then the message that never
    // ended.
    smtp.sort_by_key(|l| (!l["object"]["cut"].is_null(), l["object"]["index"].as_u64()));
    let eicar = std::fs::read("data/samples/eicar.com").unwrap();
    let names: Vec<_> = smtp
        .iter()
        .map(|l| l["object"]["file_name"].clone())
        .collect();
    assert_eq!(names, ["eicar.com", "tiny.exe", "eicar.com"]);
    // The base64 decoded to the very file that was attached, even in the
    // part that never ended.
    for line in [smtp[0], smtp[2]] {
        assert_eq!(line["object"]["size"], eicar.len());
        let expected = reference_all_with(&rules, &printed_externals(line), &eicar);
        assert_eq!(printed_all(line), expected);
        let names: Vec<&str> = expected.iter().map(|(rule, _)| rule.as_str()).collect();
        assert!(names.contains(&"eicar_by_name"), "{names:?}");
    }
    assert_eq!(smtp[2]["object"]["cut"], "malformed");
    assert!(smtp[2]["object"]["error"]
        .as_str()
        .unwrap()
        .contains("closing boundary"));
    if !tshark_installed("the objects are not compared with tshark's") {
        return;
    }
    let export = tempfile::tempdir().unwrap();
    let messages = tshark_export("imf", export.path());
    assert_eq!(
        messages.len(),
        2,
        "tshark exported {} messages",
        messages.len()
    );
    let parser = mail_parser::MessageParser::default();
    let attachments: Vec<Vec<u8>> = messages
        .iter()
        .filter_map(|m| parser.parse(m))
        .flat_map(|m| {
            m.attachments()
                .map(|a| a.contents().to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    // tshark's messages hold the same attachments; the one of the
    // unended message is ours alone (cut), so it is not compared here.
    let complete: Vec<_> = smtp
        .iter()
        .copied()
        .filter(|l| l["object"]["cut"].is_null())
        .collect();
    let complete_files: Vec<Vec<u8>> = attachments
        .into_iter()
        .filter(|a| complete.iter().any(|l| l["object"]["size"] == a.len()))
        .collect();
    assert_eq!(match_files(&rules, &complete_files, &complete).len(), 2);
}

#[test]
fn hostile_objects_end_cut_with_a_reason_and_harm_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    rules(dir.path());
    let lines = pcap(dir.path(), &["--max-object-size", "1MiB"]);
    let by_name = |name: &str| {
        let found = lines.iter().find(|l| l["object"]["file_name"] == name);
        found.unwrap_or_else(|| panic!("no object named {name}"))["object"].clone()
    };
    let bomb = by_name("bomb.gz");
    assert_eq!(
        (bomb["size"].as_u64(), &bomb["cut"]),
        (Some(1 << 20), &"size_cap".into())
    );
    let chunked = by_name("chunked");
    assert_eq!(chunked["cut"], "malformed");
    assert!(chunked["error"].as_str().unwrap().contains("chunk size"));
    let short = by_name("short");
    assert_eq!(short["cut"], "flow_ended");
    // The direction that carried the malformed chunk says why its parsing
    // stopped; every other direction of the capture parsed to its end.
    let stopped: Vec<_> = lines
        .iter()
        .filter(|l| !l["objects"]["error"].is_null() && l.get("objects").is_some())
        .collect();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0]["flow"]["src"], "127.0.0.1:18181");
    let complete = lines
        .iter()
        .filter(|l| l.get("object").is_some() && l["object"]["cut"].is_null())
        .count();
    assert_eq!(complete, 6, "four HTTP downloads and two SMTP attachments");
    // The summary on stderr counts them.
    let out = run_yaraflow(&["pcap", "--rules", dir.path().to_str().unwrap(), CAPTURE]);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("16 directions, 10 files inside them"),
        "{summary}"
    );
    // Without objects: directions only.
    let plain = pcap(dir.path(), &["--no-objects"]);
    assert!(plain
        .iter()
        .all(|l| l.get("object").is_none() && l.get("objects").is_none()));
    assert_eq!(
        plain.len(),
        lines.iter().filter(|l| l.get("flow").is_some()).count()
    );
}
