//! Bounds on what one credential's agents may make the server keep.

use crate::proto::AgentToServer;

/// How much an agent's message may carry and how many agents one credential may speak
/// for. Past a bound, the message is refused and nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLimits {
    /// Attributes in one description, identifying and not together.
    pub max_attributes: usize,
    /// Bytes of one description's keys and values together.
    pub max_attribute_bytes: usize,
    /// Package statuses in one message.
    pub max_statuses: usize,
    /// Agents bound to one credential (an API token, or a user's sessions).
    pub agents_per_credential: u64,
}

impl Default for FleetLimits {
    fn default() -> Self {
        Self {
            max_attributes: 256,
            max_attribute_bytes: 64 * 1024,
            max_statuses: 64,
            agents_per_credential: 50_000,
        }
    }
}

impl FleetLimits {
    /// Why `message` is past a bound, if it is.
    pub(crate) fn check(&self, message: &AgentToServer) -> Result<(), String> {
        if let Some(description) = &message.agent_description {
            let attributes = description
                .identifying_attributes
                .iter()
                .chain(&description.non_identifying_attributes);
            let count = attributes.clone().count();
            if count > self.max_attributes {
                return Err(format!(
                    "the description has {count} attributes; at most {} are kept (fleet.max_attributes)",
                    self.max_attributes
                ));
            }
            let bytes: usize = attributes
                .map(|kv| kv.key.len() + crate::attributes::value_len(kv.value.as_ref()))
                .sum();
            if bytes > self.max_attribute_bytes {
                return Err(format!(
                    "the description's attributes hold {bytes} bytes; at most {} are kept (fleet.max_attribute_bytes)",
                    self.max_attribute_bytes
                ));
            }
        }
        if let Some(statuses) = &message.package_statuses
            && statuses.packages.len() > self.max_statuses
        {
            return Err(format!(
                "the message reports {} package statuses; at most {} are kept (fleet.max_statuses)",
                statuses.packages.len(),
                self.max_statuses
            ));
        }
        Ok(())
    }
}
