"""SCIM 2.0 provisioning (RFC 7643/7644) at ``/scim/v2/``: an identity provider creates,
updates, deactivates and deletes users, and groups that are teams and roles.

- ``filters``: the filter and attribute-path grammar, parsed and evaluated;
- ``patch``: PATCH operations applied to a resource's document;
- ``resources``: documents ↔ what is stored (users, groups, the team:role convention);
- ``store``: the provisioning tokens, users, groups and memberships (audited writes);
- ``discovery``: ServiceProviderConfig, ResourceTypes, Schemas;
- ``protocol``: the schema URNs and SCIM's errors;
- ``api``: the ``/scim/v2/`` blueprint; ``admin``: token administration for org admins;
- ``cli``: ``mlflow-share scim token create|list|revoke``.
"""
