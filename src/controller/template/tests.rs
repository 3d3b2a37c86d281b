//! Rendering cases from the reference's docs/tagging.md and its template
//! tests, rewritten; each names the rule.

use super::*;

fn props(pairs: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Checks `rule ¦ template ¦ expected` rows: `!text` expects an error containing
/// `text`, `=text` an error equal to it.
fn check(vars: &HashMap<&str, String>, rows: &str) -> usize {
    let rows: Vec<&str> = rows
        .lines()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    for row in &rows {
        let cols: Vec<&str> = row.split('¦').map(str::trim).collect();
        let [rule, tmpl, want] = cols[..] else {
            panic!("malformed row {row:?}")
        };
        let got = render(&tmpl.replace("\\n", "\n"), vars).map_err(|e| e.to_string());
        match (got, want.split_at(want.len().min(1))) {
            (Ok(text), _) if text == want => {}
            (Err(e), ("!", part)) if e.contains(part) => {}
            (Err(e), ("=", full)) if e == full => {}
            (got, _) => panic!("rule {rule:?}: {tmpl:?} gave {got:?}, want {want:?}"),
        }
    }
    rows.len()
}

#[test]
fn tagging_doc_examples() {
    // docs/tagging.md examples 1-3, plus the VolumeAttributesClass and snapshot ones.
    let pv = props(&[("PVCName", "ebs-claim"), ("PVCNamespace", "ns-prod-abcdef")]);
    check(
        &pv,
        r#"
        ex1 plain value               ¦ value1                                      ¦ value1
        ex1 value with a space        ¦ hello world                                 ¦ hello world
        ex1 empty value               ¦                                             ¦
        ex2 PVC namespace and name    ¦ {{ .PVCNamespace }}/{{.PVCName}}            ¦ ns-prod-abcdef/ebs-claim
        ex2 PV name absent: empty     ¦ [{{ .PVName }}]                             ¦ []
        ex3 contains: arg2 has arg1   ¦ {{ .PVCNamespace | contains "prod" }}       ¦ true
        ex3 field then toUpper        ¦ {{ .PVCNamespace | field "-" 2 | toUpper }} ¦ ABCDEF
    "#,
    );
    let snap = props(&[
        ("VolumeSnapshotName", "ebs-snapshot"),
        ("VolumeSnapshotNamespace", "ns-prod"),
    ]);
    check(
        &snap,
        r#"
        snapshot namespace            ¦ {{ .VolumeSnapshotNamespace }}              ¦ ns-prod
        snapshot contains             ¦ {{ .VolumeSnapshotNamespace | contains "prod" }} ¦ true
        absent struct field is empty  ¦ [{{ .VolumeSnapshotContentName }}]          ¦ []
        dot prints the struct         ¦ {{ . }}                                     ¦ {ebs-snapshot ns-prod }
        PV field is not in the struct ¦ {{ .PVCName }}                              ¦ !can't evaluate field PVCName in type *template.VolumeSnapshotProps
    "#,
    );
}

#[test]
fn reference_unit_cases() {
    // pkg/util/template/template_test.go, rewritten; no metadata means empty fields.
    check(
        &HashMap::new(),
        "no metadata ¦ a{{ .PVCName }}b{{ .PVName }} ¦ ab",
    );
    check(
        &props(&[("PVCNamespace", "ns-prod")]),
        r#"
        parse error                   ¦ {{ .PVCName }                               ¦ =template: tmpl:1: unexpected "}" in operand
        html disabled                 ¦ {{ .PVCNamespace | html }}                  ¦ =template: tmpl:1:19: executing "tmpl" at <html>: error calling html: cannot call 'html' function
        js disabled                   ¦ {{ .PVCNamespace | js }}                    ¦ !error calling js: cannot call 'js' function
        call disabled                 ¦ {{ .PVCNamespace | call }}                  ¦ !error calling call: cannot call 'call' function
        urlquery disabled             ¦ {{ .PVCNamespace | urlquery }}              ¦ !cannot call 'urlquery' function
        toLower                       ¦ {{ "ns-PROD" | toLower }}                   ¦ ns-prod
        substring via pipeline        ¦ {{ "prod-12345" | substring 0 4 }}          ¦ prod
        field on an empty value fails ¦ {{ .PVName | field "-" 1 }}                 ¦ !extractWord: cannot index into split string; index = 1, length = 1
    "#,
    );
}

#[test]
fn funcs_go_semantics() {
    let pv = props(&[("PVCNamespace", "ns-prod-abcdef"), ("PVName", "pvc-0123")]);
    check(
        &pv,
        r#"
        field with direct arguments   ¦ {{ field "-" 1 .PVCNamespace }}             ¦ prod
        field on "" explodes runes    ¦ {{ field "" 2 .PVName }}                    ¦ c
        field negative index panics   ¦ {{ field "-" -1 .PVName }}                  ¦ !error calling field: runtime error: index out of range [-1]
        field out of range            ¦ {{ .PVCNamespace | field "-" 9 }}           ¦ =template: tmpl:1:19: executing "tmpl" at <field "-" 9>: error calling field: extractWord: cannot index into split string; index = 9, length = 3
        substring negative start      ¦ {{ substring -1 3 .PVName }}                ¦ pvc
        substring end past the end    ¦ {{ substring 4 99 .PVName }}-{{ substring 4 -1 .PVName }} ¦ 0123-0123
        substring start after end     ¦ {{ substring 5 2 .PVName }}                 ¦ !error calling substring: runtime error: slice bounds out of range [5:2]
        substring [:end] too far      ¦ {{ substring -1 99 .PVName }}               ¦ !slice bounds out of range [:99] with length 8
        substring [start:] too far    ¦ {{ substring 20 -1 .PVName }}               ¦ !slice bounds out of range [20:8]
        index and lastIndex           ¦ {{ index "-" .PVCNamespace }} {{ lastIndex "-" .PVCNamespace }} {{ index "x" .PVName }} ¦ 2 7 -1
        contains false                ¦ {{ contains "dev" .PVCNamespace }}          ¦ false
        Go's one-to-one case mapping  ¦ {{ toUpper "straße" }} {{ toLower "İ" }}    ¦ STRAßE i
        parenthesised pipeline        ¦ {{ toUpper (field "-" 1 .PVCNamespace) }}   ¦ PROD
        trailing pipe is accepted     ¦ {{ .PVName | }}                             ¦ pvc-0123
    "#,
    );
}

#[test]
fn lexing_and_literals() {
    let pv = props(&[("PVName", "pvc-0123")]);
    check(
        &pv,
        r#"
        trim markers eat whitespace   ¦ a \n {{- .PVName -}} \n b                   ¦ apvc-0123b
        {{-3 is a number              ¦ a {{-3}} b                                  ¦ a -3 b
        raw string keeps backslashes  ¦ {{ `a\t` }}                                 ¦ a\t
        escapes x, u, octal           ¦ {{ "\x41\u00e9\101" }}                      ¦ AéA
        bad escape                    ¦ {{ "\q" }}                                  ¦ =template: tmpl:1: invalid syntax
        Go integer syntax             ¦ {{ 0x1F }} {{ 017 }} {{ 0b11 }} {{ 1_000 }}  ¦ 31 15 3 1000
        bad octal overflows like Go   ¦ {{ 08 }}                                    ¦ =template: tmpl:1: integer overflow: "08"
        bools                         ¦ {{ true }}                                  ¦ true
        unterminated string           ¦ {{ "abc }}                                  ¦ =template: tmpl:1: unterminated quoted string
        unterminated action           ¦ {{ .PVName                                  ¦ =template: tmpl:1: unclosed action
        bad character after a field   ¦ {{ .PVName- }}                              ¦ =template: tmpl:1: bad character U+002D '-'
        unknown function at parse     ¦ {{ .PVName }}{{ foo }}                      ¦ =template: tmpl:1: function "foo" not defined
        empty action                  ¦ {{ }}                                       ¦ =template: tmpl:1: missing value for command
        literal after a pipe          ¦ {{ .PVName | "x" }}                         ¦ =template: tmpl:1: non executable command in pipeline stage 2
        unclosed paren                ¦ {{ (.PVName }}                              ¦ =template: tmpl:1: unclosed left paren
        stray paren                   ¦ {{ .PVName) }}                              ¦ =template: tmpl:1: unexpected ")" in command
    "#,
    );
}

#[test]
fn execution_errors_match_go() {
    let pv = props(&[("PVName", "pvc-0123")]);
    check(
        &pv,
        r#"
        dot prints the struct         ¦ {{ . }}                                     ¦ {  pvc-0123}
        unknown field, with location  ¦ x\n{{ .pvName }}                            ¦ =template: tmpl:2:3: executing "tmpl" at <.pvName>: can't evaluate field pvName in type *template.PVProps
        field of a string             ¦ {{ .PVName.Foo }}                           ¦ !at <.PVName.Foo>: can't evaluate field Foo in type string
        field given arguments         ¦ {{ .PVName "x" }}                           ¦ !PVName has arguments but cannot be invoked as function
        literal given arguments       ¦ {{ "a" "b" }}                               ¦ !at <"a">: can't give argument to non-function "a"
        nil command                   ¦ {{ nil }}                                   ¦ !nil is not a command
        nil to a string parameter     ¦ {{ toUpper nil }}                           ¦ !cannot assign nil to string
        arity checked before args     ¦ {{ toUpper }}                               ¦ =template: tmpl:1:3: executing "tmpl" at <toUpper>: wrong number of args for toUpper: want 1 got 0
        bare function argument runs   ¦ {{ toUpper toLower }}                       ¦ !at <toLower>: wrong number of args for toLower: want 1 got 0
        pipe adds the last argument   ¦ {{ .PVName | toUpper toLower }}             ¦ !wrong number of args for toUpper: want 1 got 2
        literal of the wrong type     ¦ {{ substring "0" 2 .PVName }}               ¦ =template: tmpl:1:13: executing "tmpl" at <"0">: expected integer; found "0"
        piped value of the wrong type ¦ {{ .PVName | contains "p" | toUpper }}      ¦ =template: tmpl:1:28: executing "tmpl" at <toUpper>: wrong type for value; expected string; got bool
        struct to a string parameter  ¦ {{ . | toUpper }}                           ¦ !expected string; got *template.PVProps
        control actions unsupported   ¦ {{ if .PVName }}x{{ end }}                  ¦ !{{if}} actions are not supported
        variables unsupported         ¦ {{ $.PVName }}                              ¦ !variables and character constants are not supported
        Go builtins unsupported       ¦ {{ print .PVName }}                         ¦ !error calling print: the Go builtin print is not supported
    "#,
    );
    let err = render("{{ nope }}", &pv).err();
    assert_eq!(
        err.as_ref().map(TemplateError::template),
        Some("{{ nope }}")
    );
}
