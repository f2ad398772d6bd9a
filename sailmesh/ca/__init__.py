"""Certificate authority: root CA, CSR signing for SPIFFE identities, rotation."""
