use super::*;

#[test]
fn csv_cells_are_quoted_only_when_needed() {
    assert_eq!(csv_line(&["sustained", "a,b", "say \"hi\"", ""]), "sustained,\"a,b\",\"say \"\"hi\"\"\",\n");
    let columns = metrics_columns();
    assert_eq!(csv_line(&columns), columns.join(",") + "\n");
    let row = MetricsRow { timestamp: "2026-11-23T04:00:00.000Z".into(), ..Default::default() };
    assert_eq!(row.csv_cells().len(), columns.len(), "one cell per column");
    assert!(columns.contains(&"messages_duplicated"), "every counter is a column");
}

#[test]
fn steps_add_three_columns_each_and_keep_the_flows_order() {
    let names = ["b".to_string(), "a".to_string()];
    assert_eq!(
        step_columns(&names),
        ["step_b_ok", "step_b_failed", "step_b_p95_ms", "step_a_ok", "step_a_failed", "step_a_p95_ms"]
    );
    let cells =
        [StepSecond { ok: 3, failed: 1, p95_ms: 2.5 }, StepSecond { ok: 0, failed: 0, p95_ms: f64::NAN }];
    assert_eq!(cells[0].csv_cells(), ["3", "1", "2.500"]);
    assert_eq!(cells[1].csv_cells(), ["0", "0", ""]);
    let row = MetricsRow { elapsed_s: 7, latency_p50_ms: f64::NAN, ..Default::default() };
    let json = serde_json::to_string(&JsonRow { row: &row, names: &names, steps: &cells }).unwrap();
    assert!(json.starts_with("{\"elapsed_s\":7,"), "{json}");
    assert!(json.ends_with(",\"step_b_ok\":3,\"step_b_failed\":1,\"step_b_p95_ms\":2.5,\"step_a_ok\":0,\"step_a_failed\":0,\"step_a_p95_ms\":null}"), "{json}");
}

#[test]
fn step_figures_read_back_in_order_and_are_optional() {
    let figures = Figures {
        steps: StepsFigures(vec![
            ("z".into(), StepFigures { ok: 1, p95_ms: Some(2.0), ..Default::default() }),
            ("a".into(), StepFigures::default()),
        ]),
        ..Default::default()
    };
    let json = serde_json::to_string(&figures).unwrap();
    let back: Figures = serde_json::from_str(&json).unwrap();
    assert_eq!(back, figures);
    assert_eq!(back.steps.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["z", "a"]);
    // Written before flows existed: no `steps` key.
    let old = serde_json::to_string(&Figures::default()).unwrap();
    assert!(!old.contains("steps"));
    assert_eq!(serde_json::from_str::<Figures>(&old).unwrap(), Figures::default());
    let mut h = crate::histogram::new_histogram();
    h.record_n(4_000, 3).unwrap();
    let f = StepFigures::of(3, 1, Some(&h));
    assert_eq!((f.failure_rate, f.p50_ms.map(f64::round)), (Some(0.25), Some(4.0)));
    assert_eq!(StepFigures::of(0, 0, None), StepFigures::default());
}
