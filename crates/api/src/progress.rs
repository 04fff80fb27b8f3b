//! Progress bars on a terminal, silence elsewhere (CI logs, pipes).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Items (events) done of a total, their rate and the time left.
pub(crate) fn count_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({rate}, eta {eta})")
        .expect("a valid progress template")
        // indicatif's {per_sec} prints `1,178.4135/s`; people read `1178.4/s`.
        .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}/s", state.per_sec());
        })
}

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(message: &'static str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        if std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_style(count_style());
        bar.set_message(message);
        Self { bar }
    }

    pub fn update(&self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
