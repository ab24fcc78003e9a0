"""One isolated trial: the parent starts a child process that runs it and sends back its result.

request.py is the contract both sides share; parent.py never imports child.py (the forkserver
loads it by name) and child.py never imports parent.py.
"""
