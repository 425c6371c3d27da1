//! How a region's MTA nodes are named: `<region>-<n>`, n from 1. One place for the rule, since
//! a chaos target (`node/us-east-2`), the processes `run` and the agents start, and the
//! coordinator's "which agent hosts this node" all rely on it.

use super::model::Region;

/// The name of node `n` (from 1) of `region`.
pub fn node_name(region: &str, n: u32) -> String {
    format!("{region}-{n}")
}

/// The region a node's name says it belongs to (`us-east-2` → `us-east`).
pub fn region_of_node(node: &str) -> Option<&str> {
    node.rsplit_once('-').map(|(region, _)| region)
}

/// Whether `node` names one of the scenario's nodes.
pub fn is_node(regions: &[Region], node: &str) -> bool {
    regions
        .iter()
        .any(|r| (1..=r.nodes).any(|n| node_name(&r.name, n) == node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_region() {
        let name = node_name("us-east", 2);
        assert_eq!(name, "us-east-2");
        assert_eq!(region_of_node(&name), Some("us-east"));
        assert_eq!(region_of_node("solo"), None);
    }
}
