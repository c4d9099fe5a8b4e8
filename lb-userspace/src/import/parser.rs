//! keepalived's block structure: a statement is a keyword and its arguments on one line; `{`
//! opens its block (also on the next line, alone), `}` closes it. Statements after `{` or `}`
//! on the same line are statements of their own (`url { path / }`).

use super::{
    Diagnostic,
    lexer::{Line, Location, Token},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    pub at: Location,
    /// An undecided `@id` condition of the node's line.
    pub condition: Option<String>,
    /// The block's statements, when the statement has one.
    pub block: Option<Vec<Node>>,
}

impl Node {
    /// The statement as written (keyword and arguments), for messages.
    #[must_use]
    pub fn text(&self) -> String {
        std::iter::once(self.keyword.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The block's statements (none when it has no block).
    #[must_use]
    pub fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or_default()
    }
}

/// Builds the statement tree. Unbalanced braces are reported and repaired (an extra `}` is
/// dropped, an unclosed block ends at the end of the input).
#[must_use]
pub fn parse(lines: &[Line], diagnostics: &mut Vec<Diagnostic>) -> Vec<Node> {
    // The open blocks, innermost last, each with the statements read so far.
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut top: Vec<Node> = Vec::new();
    for line in lines {
        let mut pending: Option<Node> = None;
        for token in &line.tokens {
            let container = stack.last_mut().map_or(&mut top, |(_, c)| c);
            match token {
                Token::Word(word) => match &mut pending {
                    Some(node) => node.args.push(word.clone()),
                    None => {
                        pending = Some(Node {
                            keyword: word.clone(),
                            args: Vec::new(),
                            at: line.at.clone(),
                            condition: line.condition.clone(),
                            block: None,
                        });
                    }
                },
                Token::Open => {
                    // `{` alone on a line opens the block of the statement before it.
                    let owner = pending.take().or_else(|| {
                        container
                            .last()
                            .is_some_and(|n| n.block.is_none())
                            .then(|| container.pop())
                            .flatten()
                    });
                    let owner = owner.unwrap_or_else(|| {
                        diagnostics.push(Diagnostic::left_out(
                            &line.at,
                            "a block `{` that follows no keyword: its content is not imported",
                        ));
                        Node {
                            keyword: String::new(),
                            args: Vec::new(),
                            at: line.at.clone(),
                            condition: line.condition.clone(),
                            block: None,
                        }
                    });
                    stack.push((owner, Vec::new()));
                }
                Token::Close => {
                    if let Some(node) = pending.take() {
                        container.push(node);
                    }
                    match stack.pop() {
                        Some((mut node, children)) => {
                            node.block = Some(children);
                            stack.last_mut().map_or(&mut top, |(_, c)| c).push(node);
                        }
                        None => diagnostics.push(Diagnostic::note(
                            &line.at,
                            "a `}` that closes no block: ignored",
                        )),
                    }
                }
            }
        }
        if let Some(node) = pending {
            stack.last_mut().map_or(&mut top, |(_, c)| c).push(node);
        }
    }
    while let Some((mut node, children)) = stack.pop() {
        diagnostics.push(Diagnostic::note(
            &node.at,
            format!(
                "the block of `{}` is never closed: it ends at the end of the input",
                node.text()
            ),
        ));
        node.block = Some(children);
        stack.last_mut().map_or(&mut top, |(_, c)| c).push(node);
    }
    top
}

#[cfg(test)]
mod tests {
    use super::{super::lexer::lex_str, *};

    fn tree(text: &str) -> (Vec<Node>, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let lines = lex_str(text, "t.conf", &mut diagnostics);
        (parse(&lines, &mut diagnostics), diagnostics)
    }

    /// The tree as `keyword args {children}` text, to compare shapes at a glance.
    fn shape(nodes: &[Node]) -> String {
        nodes
            .iter()
            .map(|n| match &n.block {
                Some(children) => format!("{}{{{}}}", n.text(), shape(children)),
                None => n.text(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn nested_blocks_and_one_line_blocks() {
        let (nodes, diagnostics) = tree(
            "virtual_server 198.18.0.100 80 {\n  lb_algo rr\n  real_server 198.18.0.11 80 {\n    HTTP_GET {\n      url { path /health status_code 200 }\n      url {\n path /b\n }\n    }\n  }\n}\n",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(
            shape(&nodes),
            "virtual_server 198.18.0.100 80{lb_algo rr; real_server 198.18.0.11 80{HTTP_GET{url{path /health status_code 200}; url{path /b}}}}"
        );
        assert_eq!(nodes[0].children()[1].at.line, 3);
    }

    #[test]
    fn a_brace_on_its_own_line_opens_the_previous_statement() {
        let (nodes, _) = tree("global_defs\n{\n router_id x\n}\nvirtual_server 1.2.3.4 80\n{\n}\n");
        assert_eq!(
            shape(&nodes),
            "global_defs{router_id x}; virtual_server 1.2.3.4 80{}"
        );
    }

    #[test]
    fn comments_do_not_hide_braces_in_the_tree() {
        let (nodes, _) = tree("a { # {\n ! }\n b 1 }\n");
        assert_eq!(shape(&nodes), "a{b 1}");
    }

    #[test]
    fn unbalanced_braces_are_reported_and_repaired() {
        let (nodes, diagnostics) = tree("a {\n b {\n c 1\n}\n");
        assert_eq!(shape(&nodes), "a{b{c 1}}");
        assert!(diagnostics[0].message.contains("never closed"));
        assert_eq!(diagnostics[0].at.as_ref().unwrap().line, 1);
        let (nodes, diagnostics) = tree("a 1\n}\nb 2\n");
        assert_eq!(shape(&nodes), "a 1; b 2");
        assert!(diagnostics[0].message.contains("closes no block"));
    }
}
