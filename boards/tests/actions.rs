//! The GPIO drivers against `embedded-hal-mock`: the exact pin transactions, in order.

use embedded_hal_mock::eh1::MockError;
use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use scion_boards::gpio::actions::{
    Button, ButtonEvent, LedPattern, StatusLed, Trigger, TriggerMode, TriggerTiming,
};

#[test]
fn a_hold_trigger_follows_the_label_within_its_minimum_times() {
    let mut pin = Mock::new(&[
        T::set(State::Low),  // starts off
        T::set(State::High), // label seen at 0 ms
        T::set(State::Low),  // label gone, but only after min_on (at 500 ms)
        T::set(State::High), // back, but only after min_off (at 800 ms)
        T::set(State::Low),  // released
    ]);
    let timing = TriggerTiming {
        min_on_ms: 500,
        min_off_ms: 300,
    };
    let mut trigger =
        Trigger::new(pin.clone(), TriggerMode::Hold, timing, false).expect("mock pin");
    assert!(trigger.update(0, true).expect("mock pin"));
    assert!(
        !trigger.update(100, false).expect("mock pin"),
        "held for min_on"
    );
    assert!(!trigger.update(499, false).expect("mock pin"));
    assert!(trigger.update(500, false).expect("mock pin"));
    assert!(!trigger.is_on());
    assert!(
        !trigger.update(600, true).expect("mock pin"),
        "kept off for min_off"
    );
    assert!(trigger.update(800, true).expect("mock pin"));
    assert!(
        !trigger.update(900, true).expect("mock pin"),
        "no rewrite while steady"
    );
    trigger.release().expect("mock pin");
    pin.done();
}

#[test]
fn a_pulse_trigger_fires_once_per_detection_and_active_low_inverts() {
    // Active low: on is a low level.
    let mut pin = Mock::new(&[
        T::set(State::High), // off
        T::set(State::Low),  // pulse 1 at 10
        T::set(State::High), // ends at 60 (width 50)
        T::set(State::Low),  // pulse 2: new detection at 200, after min_off 100
        T::set(State::High), // ends at 250
    ]);
    let timing = TriggerTiming {
        min_on_ms: 0,
        min_off_ms: 100,
    };
    let mode = TriggerMode::Pulse { width_ms: 50 };
    let mut trigger = Trigger::new(pin.clone(), mode, timing, true).expect("mock pin");
    assert!(trigger.update(10, true).expect("mock pin"));
    assert!(!trigger.update(40, true).expect("mock pin"));
    assert!(
        trigger.update(60, true).expect("mock pin"),
        "pulse ends while the label stays"
    );
    assert!(
        !trigger.update(150, true).expect("mock pin"),
        "no second pulse for the same detection"
    );
    assert!(!trigger.update(180, false).expect("mock pin"));
    assert!(trigger.update(200, true).expect("mock pin"));
    assert!(trigger.update(250, false).expect("mock pin"));
    drop(trigger);
    pin.done();
}

#[test]
fn a_status_led_writes_only_on_changes_of_its_pattern() {
    let mut pin = Mock::new(&[
        T::set(State::Low),  // new: dark
        T::set(State::High), // heartbeat at 0
        T::set(State::Low),  // 100
        T::set(State::High), // 200
        T::set(State::Low),  // 300
        T::set(State::High), // error from 1000: lit at once
        T::set(State::Low),  // 1100
    ]);
    let mut led = StatusLed::new(pin.clone(), false).expect("mock pin");
    led.show(LedPattern::Heartbeat, 0).expect("mock pin");
    for ms in (10..1000).step_by(10) {
        led.update(ms).expect("mock pin");
    }
    led.show(LedPattern::Error, 1000).expect("mock pin");
    led.update(1050).expect("mock pin");
    led.update(1100).expect("mock pin");
    assert!(!led.is_lit());
    drop(led);
    pin.done();
}

#[test]
fn a_button_is_debounced_and_reports_each_press_once() {
    // Active low with a pull-up: low is pressed. Bounce on press and on release.
    let levels = [
        State::High, // 0: idle
        State::Low,  // 5: contact
        State::High, // 10: bounce
        State::Low,  // 15
        State::Low,  // 20
        State::Low,  // 25
        State::Low,  // 35: steady 20 ms since 15 -> pressed
        State::Low,  // 40
        State::High, // 45: release
        State::Low,  // 50: bounce
        State::High, // 55
        State::High, // 65
        State::High, // 75: steady 20 ms since 55 -> released
    ];
    let times = [0, 5, 10, 15, 20, 25, 35, 40, 45, 50, 55, 65, 75];
    let expectations: Vec<T> = levels.iter().map(|s| T::get(*s)).collect();
    let mut pin = Mock::new(&expectations);
    let mut button = Button::new(pin.clone(), true, 20);
    let events: Vec<(u64, ButtonEvent)> = times
        .iter()
        .filter_map(|&t| button.poll(t).expect("mock pin").map(|e| (t, e)))
        .collect();
    assert_eq!(
        events,
        vec![(35, ButtonEvent::Pressed), (75, ButtonEvent::Released)]
    );
    assert!(!button.is_pressed());
    drop(button);
    pin.done();
}

#[test]
fn a_pin_error_reaches_the_caller() {
    let mut pin = Mock::new(&[
        T::set(State::Low),
        T::set(State::High).with_error(MockError::Io(std::io::ErrorKind::BrokenPipe)),
    ]);
    let mut trigger = Trigger::new(
        pin.clone(),
        TriggerMode::Hold,
        TriggerTiming::default(),
        false,
    )
    .expect("mock pin");
    assert!(trigger.update(0, true).is_err());
    assert!(
        !trigger.is_on(),
        "a failed write does not count as switched"
    );
    drop(trigger);
    pin.done();
}
