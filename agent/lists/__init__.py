"""Signed lists on the device: who may sign them, the acceptance rules, and the folders they live in.

``trust`` (names, public keys, the trust store), ``verify`` (every acceptance rule, ``LoadedList``),
``store`` (the one folder-loading rule, file names, the state folder's ``lists/``), ``assemble``
(a list's bytes from entries, shared by the hub's builder and the self-test). Building and signing
on the hub is ``tools.build``.
"""
