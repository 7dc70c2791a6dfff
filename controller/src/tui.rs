//! The live view of a run (`controller run --tui`): a terminal dashboard
//! drawn from the same [`Status`] the status API serves, so the two never
//! disagree. It shows the schedule with the current position, connections
//! against their target, message rate and latency over the last minute,
//! errors by cause, the workers, the thresholds judged on the run so far,
//! the last lines of test.log, and a warning when a worker was saturated.
//!
//! `q` (or Ctrl-C, which raw mode delivers as a key) stops the run as
//! Ctrl-C does: connections close and every results file is written.
//!
//! The view runs on a thread of its own: drawing and reading keys block,
//! and the run's task must never wait on a terminal.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table};
use ratatui::{DefaultTerminal, Frame};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::status::Status;

/// Seconds of history the sparklines show (the widest they can be drawn).
const HISTORY_S: usize = 240;
/// Time between two frames; also how long a key waits to be read.
const FRAME: Duration = Duration::from_millis(250);
/// Time between two full repaints: a stray line another process wrote to
/// the terminal (a worker's warning) does not stay on the screen.
const REPAINT: Duration = Duration::from_secs(5);

/// Whether the live view can be drawn: stdout (where it draws) and stdin
/// (where keys come from) are terminals.
pub fn available() -> bool {
    std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

/// The live view, drawing until [`LiveView::finish`].
pub struct LiveView {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveView {
    /// Takes over the terminal (raw mode, alternate screen) and draws each
    /// status `status` publishes; `q` cancels `stop`.
    pub fn start(status: watch::Receiver<Arc<Status>>, stop: CancellationToken) -> std::io::Result<LiveView> {
        let terminal = ratatui::try_init()?;
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("live-view".into())
            .spawn(move || draw_until(terminal, status, stop, &flag))
            .inspect_err(|_| ratatui::restore())?;
        Ok(LiveView { done, thread: Some(thread) })
    }

    /// Stops drawing and gives the terminal back as it was.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LiveView {
    /// The terminal is given back on every path out of a run, errors too.
    fn drop(&mut self) {
        self.end();
    }
}

/// The view's loop: a frame every [`FRAME`], keys read in between.
fn draw_until(
    mut terminal: DefaultTerminal,
    mut status: watch::Receiver<Arc<Status>>,
    stop: CancellationToken,
    done: &AtomicBool,
) {
    let mut history = History::default();
    let mut repainted = Instant::now();
    while !done.load(Ordering::Relaxed) {
        let now = status.borrow_and_update().clone();
        history.add(&now);
        if repainted.elapsed() >= REPAINT {
            let _ = terminal.clear();
            repainted = Instant::now();
        }
        let stopping = stop.is_cancelled();
        if terminal.draw(|f| draw(f, &now, &history, stopping)).is_err() {
            break; // the terminal is gone: the run goes on without a view
        }
        if event::poll(FRAME).unwrap_or(false)
            && let Ok(Event::Key(key)) = event::read()
            && key.kind == KeyEventKind::Press
        {
            let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            if matches!(key.code, KeyCode::Char('q') | KeyCode::Char('Q')) || ctrl_c {
                stop.cancel();
            }
        }
    }
    ratatui::restore();
}

/// The last [`HISTORY_S`] seconds, one value per second, for the sparklines.
#[derive(Debug, Default)]
pub struct History {
    last_s: Option<u64>,
    /// Messages received per second.
    pub received: VecDeque<u64>,
    /// p95 latency per second, µs (0: no sample).
    pub p95_us: VecDeque<u64>,
    /// Open connections at the end of each second.
    pub active: VecDeque<u64>,
}

impl History {
    /// Adds the status's last second, once.
    pub fn add(&mut self, status: &Status) {
        let Some(row) = &status.last_second else { return };
        if self.last_s.is_some_and(|s| s >= row.elapsed_s) {
            return;
        }
        self.last_s = Some(row.elapsed_s);
        for (series, value) in [
            (&mut self.received, row.counters.messages_received),
            (&mut self.p95_us, (row.latency_p95_ms * 1000.0).round() as u64),
            (&mut self.active, row.connections_active),
        ] {
            if series.len() == HISTORY_S {
                series.pop_front();
            }
            series.push_back(value);
        }
    }
}

/// Draws one frame of the view.
pub fn draw(f: &mut Frame, s: &Status, h: &History, stopping: bool) {
    let [header, phases, rates, middle, workers, bottom, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Min(4),
        Constraint::Length(6),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, s);
    draw_phases(f, phases, s);
    let [conns, msgs, latency] =
        Layout::horizontal([Constraint::Ratio(1, 3), Constraint::Ratio(1, 3), Constraint::Ratio(1, 3)])
            .areas(rates);
    draw_connections(f, conns, s, h);
    draw_rate(f, msgs, s, h);
    draw_latency(f, latency, s, h);
    let [errors, thresholds] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(middle);
    draw_errors(f, errors, s);
    draw_thresholds(f, thresholds, s);
    draw_workers(f, workers, s);
    draw_log(f, bottom, s);
    draw_footer(f, footer, s, stopping);
}

fn draw_header(f: &mut Frame, area: Rect, s: &Status) {
    let line = Line::from(vec![
        Span::styled(" stampede ", Style::new().bold().reversed()),
        Span::raw(format!(" {} -> {}  ", s.scenario, s.target)),
        Span::styled(format!("{} ", s.state), Style::new().bold()),
        Span::raw(format!(" {:.0} / {:.0} s", s.elapsed_s, s.duration_s)),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

/// The schedule as a bar, each phase a segment as long as its share of the
/// run, its name on it where it fits; a marker under the current second;
/// then every phase named with its length, the current one highlighted
/// (a 2 s ramp in a 10 min run is one column wide).
fn draw_phases(f: &mut Frame, area: Rect, s: &Status) {
    let block =
        Block::bordered().title(format!(" phases: now {} ", if s.phase.is_empty() { "-" } else { &s.phase }));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let width = inner.width as usize;
    let total = s.phases.last().map_or(0.0, |p| p.start_s + p.duration_s).max(s.duration_s);
    if width == 0 || total <= 0.0 {
        return;
    }
    let col = |t: f64| ((t / total * width as f64).round() as usize).min(width);
    let mut spans = Vec::new();
    for (i, p) in s.phases.iter().enumerate() {
        let (from, to) = (col(p.start_s), col(p.start_s + p.duration_s));
        let n = to.saturating_sub(from);
        if n == 0 {
            continue;
        }
        // A name cut short would run into the next one: the line below names it.
        let text = if p.name.chars().count() <= n { format!("{:^n$}", p.name) } else { " ".repeat(n) };
        let past = s.elapsed_s >= p.start_s + p.duration_s;
        let current = s.phase == p.name;
        let bg = match (current, past, i % 2) {
            (true, _, _) => Color::Blue,
            (_, true, _) => Color::DarkGray,
            (_, _, 0) => Color::Gray,
            _ => Color::White,
        };
        let fg = if current || past { Color::White } else { Color::Black };
        spans.push(Span::styled(text, Style::new().bg(bg).fg(fg)));
    }
    let at = col(s.elapsed_s).min(width.saturating_sub(1));
    let marker = format!("{}^ {:.0} s", " ".repeat(at), s.elapsed_s);
    let mut names = Vec::new();
    for (i, p) in s.phases.iter().enumerate() {
        if i > 0 {
            names.push(Span::raw(" > "));
        }
        let style = if s.phase == p.name { Style::new().bold().reversed() } else { Style::new() };
        names.push(Span::styled(format!("{} {:.0} s", p.name, p.duration_s), style));
    }
    let lines = vec![Line::from(spans), Line::raw(marker), Line::from(names)];
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_connections(f: &mut Frame, area: Rect, s: &Status, h: &History) {
    let (active, target) =
        s.last_second.as_ref().map_or((0, 0), |r| (r.connections_active, r.connections_target));
    let block = Block::bordered().title(" connections: active / target ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [gauge, spark] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let ratio = if target == 0 { 0.0 } else { (active as f64 / target as f64).min(1.0) };
    f.render_widget(
        Gauge::default().ratio(ratio).label(format!("{active} / {target}")).gauge_style(Color::Green),
        gauge,
    );
    f.render_widget(Sparkline::default().data(tail(&h.active, spark.width)).style(Color::Green), spark);
}

fn draw_rate(f: &mut Frame, area: Rect, s: &Status, h: &History) {
    let now = s.last_second.as_ref().map_or(0, |r| r.counters.messages_received);
    let block = Block::bordered().title(format!(" received: {now} msg/s (last second) "));
    let inner = block.inner(area);
    f.render_widget(block, area);
    f.render_widget(Sparkline::default().data(tail(&h.received, inner.width)).style(Color::Cyan), inner);
}

fn draw_latency(f: &mut Frame, area: Rect, s: &Status, h: &History) {
    let block = Block::bordered().title(" latency p95 per second ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [text, spark] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    let last = match &s.last_second {
        Some(r) if r.counters.messages_received > 0 || r.latency_p50_ms > 0.0 => format!(
            "last s: p50 {:.2} p95 {:.2} p99 {:.2} ms",
            r.latency_p50_ms, r.latency_p95_ms, r.latency_p99_ms
        ),
        _ => "last s: no sample".into(),
    };
    let l = &s.latency_ms;
    let run = match l.count {
        0 => "run: no sample".into(),
        _ => format!("run: p50 {:.2} p95 {:.2} p99 {:.2} ms", l.p50, l.p95, l.p99),
    };
    f.render_widget(Paragraph::new(vec![Line::raw(last), Line::raw(run)]), text);
    f.render_widget(Sparkline::default().data(tail(&h.p95_us, spark.width)).style(Color::Magenta), spark);
}

fn draw_errors(f: &mut Frame, area: Rect, s: &Status) {
    let total: u64 = s.errors.values().sum();
    let block = Block::bordered().title(format!(" errors by cause (run): {total} "));
    let mut causes: Vec<(&String, &u64)> = s.errors.iter().collect();
    causes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let rows = causes
        .into_iter()
        .map(|(cause, n)| Row::new([Cell::from(cause.as_str()), Cell::from(n.to_string())]));
    let table =
        Table::new(rows, [Constraint::Min(10), Constraint::Length(10)]).block(block).style(Color::Red);
    if s.errors.is_empty() {
        f.render_widget(
            Paragraph::new("none").block(Block::bordered().title(" errors by cause (run): 0 ")),
            area,
        );
    } else {
        f.render_widget(table, area);
    }
}

fn draw_thresholds(f: &mut Frame, area: Rect, s: &Status) {
    let block = Block::bordered().title(" thresholds (run so far) ");
    if s.thresholds.is_empty() {
        f.render_widget(Paragraph::new("the scenario has none").block(block), area);
        return;
    }
    let rows = s.thresholds.iter().map(|t| {
        let (word, colour) = if t.pass { ("pass", Color::Green) } else { ("FAIL", Color::Red) };
        let value = t.value.map_or("no sample".into(), |v| format!("{v:.3}"));
        Row::new([
            Cell::from(t.expression.as_str()),
            Cell::from(value),
            Cell::from(Span::styled(word, Style::new().fg(colour).add_modifier(Modifier::BOLD))),
        ])
    });
    let widths = [Constraint::Min(16), Constraint::Length(12), Constraint::Length(5)];
    f.render_widget(Table::new(rows, widths).block(block), area);
}

fn draw_workers(f: &mut Frame, area: Rect, s: &Status) {
    let lost = s.workers.iter().filter(|w| w.state == "lost").count();
    let block = Block::bordered().title(format!(" workers: {} ({lost} lost) ", s.workers.len()));
    let header = Row::new(["worker", "group", "state", "conns", "CPU %", "RSS MB", "clock ms"]).bold();
    let rows = s.workers.iter().map(|w| {
        let style = match w.state {
            "live" | "finished" => Style::new(),
            _ => Style::new().fg(Color::Red),
        };
        Row::new([
            w.id.clone(),
            w.group.clone(),
            w.state.to_string(),
            w.connections.to_string(),
            format!("{:.0}", w.cpu_pct),
            format!("{:.0}", w.rss_mb),
            format!("{:+.1}", w.clock_offset_ms),
        ])
        .style(style)
    });
    let widths = [
        Constraint::Min(12),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    f.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

fn draw_log(f: &mut Frame, area: Rect, s: &Status) {
    let block = Block::bordered().title(" test.log ");
    let keep = block.inner(area).height as usize;
    let lines: Vec<Line> =
        s.log.iter().skip(s.log.len().saturating_sub(keep)).map(|l| Line::raw(l.as_str())).collect();
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_footer(f: &mut Frame, area: Rect, s: &Status, stopping: bool) {
    let line = if stopping {
        Line::styled(" stopping: closing connections, then writing the results ...", Style::new().bold())
    } else if s.generator_stalled_seconds > 0 {
        Line::styled(
            format!(
                " WARNING: a worker was saturated in {} s: results in those seconds may understate the target's performance | q: stop",
                s.generator_stalled_seconds
            ),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        )
    } else {
        Line::raw(" q: stop the run (results are written, as with Ctrl-C)")
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The last `width` values of a series.
fn tail(series: &VecDeque<u64>, width: u16) -> Vec<u64> {
    series.iter().skip(series.len().saturating_sub(width as usize)).copied().collect()
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use stampede_model::results::{MetricsRow, ThresholdOutcome};

    use super::*;
    use crate::status::{PhaseSpan, WorkerStatus};

    fn screen(s: &Status, h: &History, width: u16, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| draw(f, s, h, false)).unwrap();
        let buf = t.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n")
            .collect()
    }

    fn status(elapsed: u64) -> Status {
        let phase = |name: &str, start: f64, len: f64| PhaseSpan {
            name: name.into(),
            start_s: start,
            duration_s: len,
        };
        let mut row = MetricsRow {
            elapsed_s: elapsed,
            phase: "sustained".into(),
            connections_target: 200,
            connections_active: 150,
            latency_p50_ms: 1.25,
            latency_p95_ms: 3.5,
            latency_p99_ms: 7.75,
            ..Default::default()
        };
        row.counters.messages_received = 1234;
        Status {
            state: "running",
            scenario: "soak".into(),
            target: "ws://127.0.0.1:9/ws".into(),
            phase: "sustained".into(),
            elapsed_s: elapsed as f64,
            duration_s: 100.0,
            last_second: Some(row),
            errors: [("connect_refused".to_string(), 7), ("timeout".to_string(), 40)].into(),
            phases: vec![
                phase("warmup", 0.0, 10.0),
                phase("ramp-up", 10.0, 20.0),
                phase("sustained", 30.0, 60.0),
                phase("cooldown", 90.0, 10.0),
            ],
            thresholds: vec![ThresholdOutcome {
                expression: "latency_p95_ms < 2".into(),
                metric: "latency_p95_ms".into(),
                op: "<".into(),
                limit: 2.0,
                value: Some(3.5),
                pass: false,
            }],
            workers: vec![WorkerStatus {
                id: "w-alpha".into(),
                live: false,
                group: "default".into(),
                state: "lost",
                connections: 150,
                cpu_pct: 42.0,
                rss_mb: 88.0,
                clock_offset_ms: -1.5,
            }],
            generator_stalled_seconds: 3,
            log: vec!["[    41.0 s] phase sustained started".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_frame_shows_every_part_of_the_run() {
        let s = status(41);
        let mut h = History::default();
        h.add(&s);
        h.add(&s); // the same second again is not a new point
        assert_eq!(h.received, [1234]);
        let text = screen(&s, &h, 120, 40);
        for want in [
            "soak -> ws://127.0.0.1:9/ws",
            "41 / 100 s",
            "warmup 10 s > ramp-up 20 s > sustained 60 s > cooldown 10 s",
            "^ 41 s",
            "150 / 200",
            "1234 msg/s",
            "p95 3.50",
            "timeout",
            "40",
            "errors by cause (run): 47",
            "latency_p95_ms < 2",
            "FAIL",
            "w-alpha",
            "lost",
            "-1.5",
            "workers: 1 (1 lost)",
            "phase sustained started",
            "saturated in 3 s",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        // The causes are listed largest first.
        assert!(text.find("timeout").unwrap() < text.find("connect_refused").unwrap(), "{text}");
    }

    #[test]
    fn the_marker_follows_the_run_and_a_tiny_terminal_does_not_panic() {
        let at = |text: &str| {
            let line = text.lines().find(|l| l.contains("^ ")).unwrap();
            line.chars().position(|c| c == '^').unwrap()
        };
        let early = at(&screen(&status(10), &History::default(), 120, 40));
        let late = at(&screen(&status(90), &History::default(), 120, 40));
        // 118 columns inside the border: 10 % and 90 % of them.
        assert_eq!((early, late), (1 + 12, 1 + 106));
        for (w, h) in [(1, 1), (20, 5), (0, 0), (300, 3)] {
            screen(&status(50), &History::default(), w, h);
        }
        let mut empty = Status::default();
        empty.phases.clear();
        screen(&empty, &History::default(), 80, 24);
    }
}
