//! Everything a run or a matrix leaves for people and CI: `report.json`, `junit.xml`,
//! `summary.md` (`run`), the matrix aggregate (`matrix`), and the self-contained HTML pages
//! (`html`) drawn from one view of a run (`view`).

pub mod bundle;
pub mod category;
pub mod diff;
pub mod html;
pub mod matrix;
pub mod run;
pub mod view;
