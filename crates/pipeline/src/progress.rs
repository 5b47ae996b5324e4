//! Progress of long work: the pipeline reports [`Progress`] to a callback; [`Bar`] draws it as a
//! progress bar on stderr (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// Where the pipeline is: `done` of `total` units of `stage`.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// `load`, `search`, `calibrate`, `block I/N` (reconstruction), `eval`, …
    pub stage: String,
    /// Units done (images, layers, steps).
    pub done: usize,
    /// Units in this stage (0 while unknown).
    pub total: usize,
    /// What is being worked on now (a layer name, the last loss), may be empty.
    pub message: String,
}

/// A callback that receives [`Progress`]; [`quiet`] ignores it.
pub type OnProgress<'a> = &'a mut dyn FnMut(&Progress);

/// A callback that ignores progress.
pub fn quiet(_: &Progress) {}

/// Reports progress of one stage.
pub fn report(
    on: &mut dyn FnMut(&Progress),
    stage: &str,
    done: usize,
    total: usize,
    message: &str,
) {
    on(&Progress {
        stage: stage.to_string(),
        done,
        total,
        message: message.to_string(),
    });
}

/// A progress bar on stderr that follows [`Progress`] reports, starting afresh at each stage.
pub struct Bar {
    bar: ProgressBar,
    stage: Option<String>,
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Bar {
    /// A bar that shows nothing until the first report.
    pub fn new() -> Self {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar { bar, stage: None }
    }

    /// Shows `p` (after [`Bar::finish`], afresh).
    pub fn update(&mut self, p: &Progress) {
        if self.stage.as_deref() != Some(p.stage.as_str()) || self.bar.is_finished() {
            self.bar.reset();
            self.bar.set_prefix(p.stage.clone());
            self.stage = Some(p.stage.clone());
        }
        self.bar.set_length(p.total as u64);
        self.bar.set_position(p.done as u64);
        self.bar.set_message(p.message.clone());
    }

    /// Clears the bar (at the end of a stage, before printing).
    pub fn finish(&mut self) {
        self.bar.finish_and_clear();
        self.stage = None;
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
