//! kdp runtime shared by every component: domain types, named limits, PostgreSQL helpers.
