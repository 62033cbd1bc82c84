//! Conditions as a plan wants them, before timestamps are attached: what the pure planners
//! ([`crate::resolve`], [`crate::topology`]) return, and what the operator's status writer
//! (`kwire_operator::status`) turns into `metav1.Condition`s.

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition as a plan wants it, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: String,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_: impl Into<String>,
        status: Status,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn ok(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, Status::True, reason, message)
    }

    pub fn failed(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, Status::False, reason, message)
    }

    pub fn is_true(&self) -> bool {
        self.status == Status::True
    }
}
