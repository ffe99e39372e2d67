"""crmroute: route Asterisk calls by data held in a CRM."""

__version__ = "0.1.0"
