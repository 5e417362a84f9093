"""Citizens' messages to their units (留言, 互动交流): collected from the nodes that took and
keep them (govhost_node/message_server.py). Pure: `merge`; shell: `collect`."""
