"""imctl: the operator's and developer's command line for Helpdesk IM."""
