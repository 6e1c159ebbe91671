//! GPIO actions as generic `embedded-hal` 1.0 drivers: a trigger output, a status LED and a
//! debounced button. Time is passed in (milliseconds from any fixed start), so the same
//! drivers run on Linux, in firmware and in tests, and a driver writes a pin only when its
//! level changes: the exact transactions are part of the contract.

use embedded_hal::digital::{InputPin, OutputPin};

/// How a trigger output follows its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerMode {
    /// On while the label is active.
    Hold,
    /// A pulse of this many milliseconds each time the label becomes active.
    Pulse {
        /// Pulse width, ms.
        width_ms: u64,
    },
}

/// Timing limits of a trigger, so a flickering label cannot chatter a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TriggerTiming {
    /// Once on, stay on at least this long (ms).
    pub min_on_ms: u64,
    /// Once off, stay off at least this long (ms).
    pub min_off_ms: u64,
}

/// Drives `pin` from a label's activity: hold or pulse, with minimum on and off times.
pub struct Trigger<P> {
    pin: P,
    mode: TriggerMode,
    timing: TriggerTiming,
    active_low: bool,
    on: bool,
    /// When the output last switched; None: never, so the first switch is free.
    changed_at: Option<u64>,
    was_active: bool,
    armed: bool,
}

impl<P: OutputPin> Trigger<P> {
    /// Take `pin` and drive it off.
    pub fn new(
        mut pin: P,
        mode: TriggerMode,
        timing: TriggerTiming,
        active_low: bool,
    ) -> Result<Self, P::Error> {
        write(&mut pin, false, active_low)?;
        Ok(Trigger {
            pin,
            mode,
            timing,
            active_low,
            on: false,
            changed_at: None,
            was_active: false,
            armed: false,
        })
    }

    /// Whether the output is on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Follow the label's state at `now_ms`; returns whether the output changed. Call it on
    /// every result and on a timer, so pulses end and delayed switches happen on time.
    pub fn update(&mut self, now_ms: u64, active: bool) -> Result<bool, P::Error> {
        let rising = active && !self.was_active;
        self.was_active = active;
        let held = self
            .changed_at
            .map_or(u64::MAX, |at| now_ms.saturating_sub(at));
        let want = match self.mode {
            TriggerMode::Hold => active,
            TriggerMode::Pulse { width_ms } => {
                if rising {
                    self.armed = true;
                }
                if self.on {
                    held < width_ms.max(self.timing.min_on_ms)
                } else {
                    self.armed
                }
            }
        };
        let allowed = if self.on {
            held >= self.timing.min_on_ms
        } else {
            held >= self.timing.min_off_ms
        };
        if want == self.on || !allowed {
            return Ok(false);
        }
        write(&mut self.pin, want, self.active_low)?;
        self.on = want;
        self.changed_at = Some(now_ms);
        if want {
            self.armed = false;
        }
        Ok(true)
    }

    /// Switch off and give the pin back.
    pub fn release(mut self) -> Result<P, P::Error> {
        write(&mut self.pin, false, self.active_low)?;
        Ok(self.pin)
    }
}

/// What a status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedPattern {
    /// Dark.
    Off,
    /// Lit.
    On,
    /// Two short blinks a second: serving.
    Heartbeat,
    /// Fast blinking (5 Hz): something is wrong (no model, no frames).
    Error,
}

impl LedPattern {
    /// Whether the LED is lit `ms` into the pattern.
    pub fn lit_at(self, ms: u64) -> bool {
        match self {
            LedPattern::Off => false,
            LedPattern::On => true,
            LedPattern::Heartbeat => matches!(ms % 1000, 0..100 | 200..300),
            LedPattern::Error => ms % 200 < 100,
        }
    }
}

/// A status LED showing a [`LedPattern`].
pub struct StatusLed<P> {
    pin: P,
    active_low: bool,
    pattern: LedPattern,
    started: u64,
    lit: bool,
}

impl<P: OutputPin> StatusLed<P> {
    /// Take `pin`, dark.
    pub fn new(mut pin: P, active_low: bool) -> Result<Self, P::Error> {
        write(&mut pin, false, active_low)?;
        Ok(StatusLed {
            pin,
            active_low,
            pattern: LedPattern::Off,
            started: 0,
            lit: false,
        })
    }

    /// Show `pattern` from `now_ms` (a no-op if it is already showing).
    pub fn show(&mut self, pattern: LedPattern, now_ms: u64) -> Result<(), P::Error> {
        if pattern != self.pattern {
            self.pattern = pattern;
            self.started = now_ms;
        }
        self.update(now_ms)
    }

    /// Advance the pattern to `now_ms` (call at least every 50 ms).
    pub fn update(&mut self, now_ms: u64) -> Result<(), P::Error> {
        let lit = self.pattern.lit_at(now_ms.saturating_sub(self.started));
        if lit != self.lit {
            write(&mut self.pin, lit, self.active_low)?;
            self.lit = lit;
        }
        Ok(())
    }

    /// Whether the LED is lit.
    pub fn is_lit(&self) -> bool {
        self.lit
    }
}

/// A debounced button edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonEvent {
    /// Became pressed (after being steady for the debounce time).
    Pressed,
    /// Became released.
    Released,
}

/// A push button read through `pin`, debounced: a level counts once it has held for
/// `debounce_ms`. With `active_low` (a button to ground with a pull-up) low means pressed.
pub struct Button<P> {
    pin: P,
    active_low: bool,
    debounce_ms: u64,
    pressed: bool,
    candidate: bool,
    candidate_since: u64,
}

impl<P: InputPin> Button<P> {
    /// A button considered released at first.
    pub fn new(pin: P, active_low: bool, debounce_ms: u64) -> Self {
        Button {
            pin,
            active_low,
            debounce_ms,
            pressed: false,
            candidate: false,
            candidate_since: 0,
        }
    }

    /// Sample the pin at `now_ms` (every few ms); an event when the debounced state changes.
    pub fn poll(&mut self, now_ms: u64) -> Result<Option<ButtonEvent>, P::Error> {
        let pressed = self.pin.is_high()? != self.active_low;
        if pressed != self.candidate {
            self.candidate = pressed;
            self.candidate_since = now_ms;
        }
        if self.candidate == self.pressed
            || now_ms.saturating_sub(self.candidate_since) < self.debounce_ms
        {
            return Ok(None);
        }
        self.pressed = self.candidate;
        Ok(Some(if self.pressed {
            ButtonEvent::Pressed
        } else {
            ButtonEvent::Released
        }))
    }

    /// The debounced state.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }
}

fn write<P: OutputPin>(pin: &mut P, on: bool, active_low: bool) -> Result<(), P::Error> {
    if on != active_low {
        pin.set_high()
    } else {
        pin.set_low()
    }
}
